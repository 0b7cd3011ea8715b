// Every failure the engine reports is an EngineError with a stable machine-readable code. The class
// lives here, below the engine, so that a parse failure raised by this package (a bad safetensors
// header, checkpoint, config.json or adapter_config.json) is the same EngineError, with the same
// code, wherever it surfaces: in the engine, in the worker's host tier or in the API's validation.
// The engine maps its native failures onto it (toEngineError, packages/engine/src/errors.ts).

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
