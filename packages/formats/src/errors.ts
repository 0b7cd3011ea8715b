// Every failure the engine reports is an EngineError with a stable machine-readable code.
// Native failures arrive as plain Errors whose message starts with "[CODE] "; toEngineError maps them.

export type EngineErrorCode =
  | 'INVALID_ARGUMENT'
  | 'INVALID_SAFETENSORS'
  | 'INVALID_CHECKPOINT'
  | 'MODEL_CONFIG'
  | 'UNSUPPORTED_ARCHITECTURE'
  | 'MISSING_TENSOR'
  | 'TENSOR_SHAPE'
  | 'ADAPTER_CONFIG'
  | 'ADAPTER_UNSUPPORTED'
  | 'ADAPTER_SHAPE'
  | 'ADAPTER_NOT_FOUND'
  | 'ADAPTER_EXISTS'
  | 'ADAPTER_IN_USE'
  | 'ADAPTER_POOL_FULL'
  | 'KV_CACHE_FULL'
  | 'TOKENIZER'
  | 'BACKEND_UNAVAILABLE'
  | 'ENGINE_CLOSED'
  | 'CUDA'
  | 'OUT_OF_MEMORY'
  /** A deferred (late) allowed-token mask could not be computed. */
  | 'MASKS_FAILED'
  | 'NATIVE';

export class EngineError extends Error {
  readonly code: EngineErrorCode;
  constructor(code: EngineErrorCode, message: string) {
    super(message);
    this.name = 'EngineError';
    this.code = code;
  }
}

const NATIVE_PREFIX = /^\[([A-Z_]+)\] ([\s\S]*)$/;

export function toEngineError(e: unknown): EngineError {
  if (e instanceof EngineError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  const m = NATIVE_PREFIX.exec(msg);
  if (m) return new EngineError(m[1] as EngineErrorCode, m[2]!);
  return new EngineError('NATIVE', msg);
}
