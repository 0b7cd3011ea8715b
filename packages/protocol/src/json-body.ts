// Request bodies as JSON, bounded: the worker and the API parse every JSON body through this, so a
// body nested deeper than any real request, or carrying a number JSON.parse turns into Infinity
// (1e999), is a 400 naming where, never a stack overflow (500) or a value silently re-serialised as
// null on its way from the API to a worker.

/** Largest request body, in bytes (worker and API inference routes: 413 above). */
export const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** Deepest nesting of arrays and objects a body may have (a JSON schema in response_format nests two levels per schema level). */
export const MAX_JSON_DEPTH = 256;

export class JsonBodyError extends Error {
  constructor(
    readonly code: 'invalid_json' | 'too_deep' | 'number_out_of_range',
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'JsonBodyError';
  }
}

/** Throws when `text` nests arrays/objects deeper than `maxDepth` (a scan, before anything recursive sees it). */
function checkDepth(text: string, maxDepth: number): void {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > maxDepth)
        throw new JsonBodyError('too_deep', `the JSON body nests arrays and objects more than ${maxDepth} levels deep`);
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
}

/** Whether `v` holds a number that is not finite (1e999 parses to Infinity); `path` is left holding where. */
function hasNonFinite(v: unknown, path: string[]): boolean {
  if (typeof v === 'number') return !Number.isFinite(v);
  if (typeof v !== 'object' || v === null) return false;
  const step = (k: string, x: unknown): boolean => {
    if (typeof x !== 'number' && (typeof x !== 'object' || x === null)) return false;
    path.push(k);
    if (hasNonFinite(x, path)) return true;
    path.pop();
    return false;
  };
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) if (step(String(i), v[i])) return true;
  } else {
    for (const k in v) if (Object.hasOwn(v, k) && step(k, (v as Record<string, unknown>)[k])) return true;
  }
  return false;
}

/** Parses a JSON request body: malformed, too deep or holding an out-of-range number is a JsonBodyError. */
export function parseJsonText(text: string, maxDepth = MAX_JSON_DEPTH): unknown {
  checkDepth(text, maxDepth);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new JsonBodyError('invalid_json', `malformed JSON body: ${(e as Error).message}`);
  }
  const path: string[] = [];
  if (hasNonFinite(value, path)) {
    const field = path.join('.') || 'body';
    throw new JsonBodyError(
      'number_out_of_range',
      `${field}: the number is out of range (it is not a finite double)`,
      path.length > 0 ? field : null,
    );
  }
  return value;
}
