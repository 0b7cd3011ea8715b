// EngineError itself lives in @loraplex/formats (its parsers raise it too); re-exported here so the
// engine's modules keep one import. Native failures arrive as plain Errors whose message starts
// with "[CODE] "; toEngineError maps them.
import { EngineError, type EngineErrorCode } from '@loraplex/formats';

export { EngineError, type EngineErrorCode };

const NATIVE_PREFIX = /^\[([A-Z_]+)\] ([\s\S]*)$/;

export function toEngineError(e: unknown): EngineError {
  if (e instanceof EngineError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  const m = NATIVE_PREFIX.exec(msg);
  if (m) return new EngineError(m[1] as EngineErrorCode, m[2]!);
  return new EngineError('NATIVE', msg);
}
