// Rewrites of a JSON schema before xgrammar 0.1.27 compiles it, for schema features its grammar gets
// wrong. The rewritten schema accepts a subset of what the original accepts, so outputs still
// validate against the original.
//
// Bounded `number`: xgrammar's float-range grammar lets the fraction carry a value past a bound
// (with minimum -7 it accepts -7.5; with maximum 10 it accepts 10.5; with minimum -9.83, -9.861),
// while its integer ranges are exact (checked over every integer in test ranges). A `number` with
// minimum / maximum / exclusiveMinimum / exclusiveMaximum is therefore generated as an integer in
// the range, when the range holds one; such outputs are valid numbers. A range with no integer in
// it (e.g. [0.2, 0.8]) is left to xgrammar as it is.
//
// Bounded `integer`: the exactness above does not hold for every bound (with maximum 120 it
// generated 122), so an integer range of at most ENUM_MAX values is given as the enum of its
// values, which xgrammar compiles to exact alternatives. Wider ranges stay as they are.
//
// Length-bounded `string`: xgrammar turns minLength / maxLength into `"\"" [^"\\\r\n]{m,n} "\""`,
// which lets raw control characters (U+0000-U+001F) into the string — not JSON — and allows no
// escapes. Such a string is given as the equivalent pattern without control characters instead.

type Node = Record<string, unknown>;

const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null && !Array.isArray(v);

function boundedNumber(n: Node): Node {
  if (n.type !== 'number') return n;
  const num = (k: string): number | undefined => (typeof n[k] === 'number' ? (n[k] as number) : undefined);
  const min = num('minimum'),
    max = num('maximum'),
    xmin = num('exclusiveMinimum'),
    xmax = num('exclusiveMaximum');
  if (min === undefined && max === undefined && xmin === undefined && xmax === undefined) return n;
  const lo = Math.max(
    min !== undefined ? Math.ceil(min) : -Infinity,
    xmin !== undefined ? Math.floor(xmin) + 1 : -Infinity,
  );
  const hi = Math.min(
    max !== undefined ? Math.floor(max) : Infinity,
    xmax !== undefined ? Math.ceil(xmax) - 1 : Infinity,
  );
  if (lo > hi) return n;
  const { minimum: _a, maximum: _b, exclusiveMinimum: _c, exclusiveMaximum: _d, ...rest } = n;
  return {
    ...rest,
    type: 'integer',
    ...(Number.isFinite(lo) ? { minimum: lo } : {}),
    ...(Number.isFinite(hi) ? { maximum: hi } : {}),
  };
}

const ENUM_MAX = 2048;

function boundedInteger(n: Node): Node {
  if (n.type !== 'integer' || n.enum !== undefined || n.const !== undefined || n.multipleOf !== undefined) return n;
  const num = (k: string): number | undefined => (typeof n[k] === 'number' ? (n[k] as number) : undefined);
  const min = num('minimum'),
    max = num('maximum'),
    xmin = num('exclusiveMinimum'),
    xmax = num('exclusiveMaximum');
  const lo = Math.max(
    min !== undefined ? Math.ceil(min) : -Infinity,
    xmin !== undefined ? Math.floor(xmin) + 1 : -Infinity,
  );
  const hi = Math.min(
    max !== undefined ? Math.floor(max) : Infinity,
    xmax !== undefined ? Math.ceil(xmax) - 1 : Infinity,
  );
  if (!Number.isFinite(lo) || !Number.isFinite(hi) || lo > hi || hi - lo + 1 > ENUM_MAX) return n;
  const { minimum: _a, maximum: _b, exclusiveMinimum: _c, exclusiveMaximum: _d, type: _t, ...rest } = n;
  return { ...rest, enum: Array.from({ length: hi - lo + 1 }, (_, i) => lo + i) };
}

function boundedString(n: Node): Node {
  if (n.type !== 'string' || (n.minLength === undefined && n.maxLength === undefined)) return n;
  if (n.pattern !== undefined || n.format !== undefined || n.enum !== undefined || n.const !== undefined) return n;
  const lo = typeof n.minLength === 'number' ? Math.max(0, Math.ceil(n.minLength)) : 0;
  const hi = typeof n.maxLength === 'number' ? Math.floor(n.maxLength) : undefined;
  if (hi !== undefined && hi < lo) return n;
  const { minLength: _a, maxLength: _b, ...rest } = n;
  return { ...rest, pattern: `^[^"\\\\\\x00-\\x1f]{${lo},${hi ?? ''}}$` };
}

const MAP_KEYS = ['properties', 'patternProperties', '$defs', 'definitions'];
const ONE_KEYS = [
  'items',
  'additionalProperties',
  'contains',
  'not',
  'if',
  'then',
  'else',
  'unevaluatedProperties',
  'unevaluatedItems',
];
const LIST_KEYS = ['anyOf', 'oneOf', 'allOf', 'prefixItems', 'items'];

export function workAroundXgrammar(schema: unknown): unknown {
  if (!isNode(schema)) return schema;
  const out: Node = { ...schema };
  for (const k of MAP_KEYS) {
    const m = out[k];
    if (isNode(m)) out[k] = Object.fromEntries(Object.entries(m).map(([name, s]) => [name, workAroundXgrammar(s)]));
  }
  for (const k of ONE_KEYS) if (isNode(out[k])) out[k] = workAroundXgrammar(out[k]);
  for (const k of LIST_KEYS) if (Array.isArray(out[k])) out[k] = (out[k] as unknown[]).map(workAroundXgrammar);
  return boundedString(boundedInteger(boundedNumber(out)));
}
