// Checks a JSON schema before the grammar compiler sees it: limits (depth, size, enum sizes, length
// bounds), `$ref`s (local only, no cycles), keywords (only those xgrammar 0.1.27 honours) and cheap
// contradictions (a schema no value satisfies). Everything here is a 400 with a message naming the
// place in the schema, never a compile: xgrammar's converter recurses on the C++ stack without a
// check, so a schema nested ~100 deep overwrites its WebAssembly memory, a `false` schema or an
// empty enum aborts it, and keywords it ignores (`not`, `if`, `multipleOf`, `uniqueItems`, allOf of
// several schemas, ...) would let it generate output that violates the schema.

/** An unusable schema; `message` says why (the route turns it into a 400 naming the field). */
export class InvalidSchemaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidSchemaError';
  }
}

export interface SchemaLimits {
  depth: number;
  chars: number;
  nodes: number;
  enumValues: number;
  count: number;
  pattern: number;
}

export const SCHEMA_LIMITS: SchemaLimits = {
  /** Nesting of subschemas, counted through `$ref`s (xgrammar traps near 100; OpenAI allows 10). */
  depth: 32,
  /** The schema as JSON, in characters. */
  chars: 200_000,
  /** Subschemas in all. */
  nodes: 5_000,
  /** Values of one enum. */
  enumValues: 1_024,
  /** minLength / maxLength / minItems / maxItems / min/maxProperties (xgrammar expands repetitions). */
  count: 10_000,
  /** Characters of one `pattern`. */
  pattern: 1_000,
};

type Node = Record<string, unknown>;
const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Keywords whose value is one subschema / a map of them / a list of them. */
const ONE = new Set(['items', 'additionalProperties', 'unevaluatedProperties', 'unevaluatedItems']);
const MAP = new Set(['properties', 'patternProperties']);
const LIST = new Set(['anyOf', 'oneOf', 'allOf', 'prefixItems']);
const DEFS = new Set(['$defs', 'definitions']);
/** Keywords xgrammar honours with scalar values, and annotations that constrain nothing. */
const SCALAR = new Set([
  'type',
  'enum',
  'const',
  'required',
  '$ref',
  'pattern',
  'format',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'minItems',
  'maxItems',
  'title',
  'description',
  'default',
  'examples',
  '$schema',
  '$id',
  '$comment',
  'deprecated',
  'readOnly',
  'writeOnly',
]);
/** Where `false` means "nothing more" (supported); anywhere else it is a schema no value satisfies. */
const FALSE_OK = new Set(['additionalProperties', 'unevaluatedProperties', 'unevaluatedItems', 'items']);
const WHY_UNSUPPORTED: Record<string, string> = {
  not: 'the grammar cannot exclude values',
  if: 'conditional schemas cannot be generated',
  then: 'conditional schemas cannot be generated',
  else: 'conditional schemas cannot be generated',
  multipleOf: 'the grammar cannot enforce it',
  uniqueItems: 'the grammar cannot enforce it',
  contains: 'the grammar cannot enforce it',
  minContains: 'the grammar cannot enforce it',
  maxContains: 'the grammar cannot enforce it',
  propertyNames: 'the grammar cannot enforce it',
  minProperties: 'the grammar cannot enforce it',
  maxProperties: 'the grammar cannot enforce it',
  dependentRequired: 'the grammar cannot enforce it',
  dependentSchemas: 'the grammar cannot enforce it',
  dependencies: 'the grammar cannot enforce it',
};

const at = (path: string): string => (path === '' ? 'the schema' : `#${path}`);
const fail = (path: string, what: string): never => {
  throw new InvalidSchemaError(`${at(path)}: ${what}`);
};
const escape = (k: string): string => k.replaceAll('~', '~0').replaceAll('/', '~1');

const jsonType = (v: unknown): string =>
  v === null
    ? 'null'
    : Array.isArray(v)
      ? 'array'
      : typeof v === 'number'
        ? Number.isInteger(v)
          ? 'integer'
          : 'number'
        : typeof v;
const typeAllows = (types: string[], v: unknown): boolean => {
  const t = jsonType(v);
  return types.includes(t) || (t === 'integer' && types.includes('number'));
};

interface Scan {
  limits: SchemaLimits;
  nodes: number;
  /** Pointer of each subschema holding a `$ref` -> the pointer it references. */
  refs: Map<string, string>;
  /** Depth (without following refs) of each subschema's subtree. */
  depth: Map<string, number>;
}

/** Checks keywords, values and contradictions of one subschema and scans what is below it. */
function checkNode(schema: unknown, path: string, from: string, scan: Scan, root: unknown, level = 1): number {
  // Checked on the way down, so a schema nested thousands deep costs no deep recursion here either.
  if (level > scan.limits.depth) fail('', `nested more than ${scan.limits.depth} levels deep`);
  if (++scan.nodes > scan.limits.nodes) fail('', `more than ${scan.limits.nodes} subschemas`);
  if (schema === true) return 1;
  if (schema === false) {
    if (!FALSE_OK.has(from)) fail(path, '`false` accepts no value (the schema is unsatisfiable)');
    return 1;
  }
  if (!isNode(schema)) return fail(path, 'a subschema must be an object or a boolean');
  let below = 0;
  for (const [k, v] of Object.entries(schema)) {
    const p = `${path}/${escape(k)}`;
    if (k === 'not')
      fail(
        path,
        isNode(v) && Object.keys(v).length === 0
          ? '`not: {}` accepts no value (the schema is unsatisfiable)'
          : '`not` is not supported: the grammar cannot exclude values',
      );
    if (WHY_UNSUPPORTED[k]) fail(path, `\`${k}\` is not supported: ${WHY_UNSUPPORTED[k]}`);
    if (ONE.has(k)) below = Math.max(below, checkNode(v, p, k, scan, root, level + 1));
    else if (MAP.has(k) || DEFS.has(k)) {
      if (!isNode(v)) fail(p, 'must be an object of schemas');
      for (const [name, s] of Object.entries(v as Node)) {
        const d = checkNode(s, `${p}/${escape(name)}`, k, scan, root, DEFS.has(k) ? 1 : level + 1);
        if (!DEFS.has(k))
          below = Math.max(below, d); // definitions count where they are used
        else scan.depth.set(`${p}/${escape(name)}`, d);
      }
    } else if (LIST.has(k)) {
      if (!Array.isArray(v) || v.length === 0)
        fail(p, 'must be a non-empty array of schemas (an empty one is unsatisfiable)');
      if (k === 'allOf' && (v as unknown[]).length > 1)
        fail(p, '`allOf` of more than one schema is not supported: merge them into one schema');
      (v as unknown[]).forEach(
        (s, i) => (below = Math.max(below, checkNode(s, `${p}/${i}`, k, scan, root, level + 1))),
      );
    } else if (!SCALAR.has(k)) fail(path, `unknown or unsupported keyword \`${k}\``);
  }
  checkValues(schema, path, scan.limits);
  if (typeof schema.$ref === 'string') {
    scan.refs.set(path, resolveRef(schema.$ref, root, path));
  }
  scan.depth.set(path, 1 + below);
  return 1 + below;
}

/** Bounds, enums and cheap contradictions of one object schema. */
function checkValues(s: Node, path: string, limits: SchemaLimits): void {
  const types = typeof s.type === 'string' ? [s.type] : Array.isArray(s.type) ? (s.type as string[]) : undefined;
  if (types && types.length === 0)
    fail(`${path}/type`, 'an empty type list accepts no value (the schema is unsatisfiable)');
  const values = Array.isArray(s.enum) ? (s.enum as unknown[]) : undefined;
  if (values) {
    if (values.length === 0) fail(`${path}/enum`, 'an empty enum accepts no value (the schema is unsatisfiable)');
    if (values.length > limits.enumValues) fail(`${path}/enum`, `more than ${limits.enumValues} values`);
  }
  for (const [k, list] of [
    ['enum', values],
    ['const', 'const' in s ? [s.const] : undefined],
  ] as const) {
    if (!list || !types) continue;
    const ok = list.filter((v) => typeAllows(types, v));
    if (ok.length === 0)
      fail(`${path}/${k}`, `no value of \`${k}\` has the type ${JSON.stringify(s.type)} (the schema is unsatisfiable)`);
    if (ok.length < list.length)
      fail(
        `${path}/${k}`,
        `values of another type than ${JSON.stringify(s.type)} are not supported (remove them: no output may have them)`,
      );
  }
  if (typeof s.pattern === 'string' && s.pattern.length > limits.pattern)
    fail(`${path}/pattern`, `longer than ${limits.pattern} characters`);
  for (const k of ['minLength', 'maxLength', 'minItems', 'maxItems']) {
    const v = s[k];
    if (typeof v === 'number' && v > limits.count) fail(`${path}/${k}`, `${v} exceeds the limit of ${limits.count}`);
  }
  const num = (k: string): number | undefined => (typeof s[k] === 'number' ? (s[k] as number) : undefined);
  const range = (lo: string, hi: string): void => {
    const a = num(lo),
      b = num(hi);
    if (a !== undefined && b !== undefined && a > b)
      fail(path, `${lo} ${a} is greater than ${hi} ${b} (the schema is unsatisfiable)`);
  };
  range('minLength', 'maxLength');
  range('minItems', 'maxItems');
  range('minimum', 'maximum');
  const lo = Math.max(num('minimum') ?? -Infinity, num('exclusiveMinimum') ?? -Infinity);
  const hi = Math.min(num('maximum') ?? Infinity, num('exclusiveMaximum') ?? Infinity);
  const open = (num('exclusiveMinimum') ?? -Infinity) >= lo || (num('exclusiveMaximum') ?? Infinity) <= hi;
  if (lo > hi || (lo === hi && open && Number.isFinite(lo)))
    fail(path, 'the numeric bounds leave no value (the schema is unsatisfiable)');
  if (types?.length === 1 && types[0] === 'integer' && Number.isFinite(lo) && Number.isFinite(hi)) {
    const a = num('exclusiveMinimum') === lo ? Math.floor(lo) + 1 : Math.ceil(lo);
    const b = num('exclusiveMaximum') === hi ? Math.ceil(hi) - 1 : Math.floor(hi);
    if (a > b) fail(path, 'no integer lies within the bounds (the schema is unsatisfiable)');
  }
  if (Array.isArray(s.required)) {
    const props = isNode(s.properties) ? s.properties : {};
    const additional = s.additionalProperties;
    for (const name of s.required as unknown[]) {
      if (typeof name !== 'string') continue;
      if (props[name] === false)
        fail(
          `${path}/required`,
          `the required property "${name}" has the schema \`false\` (the schema is unsatisfiable)`,
        );
      if (!(name in props) && !isNode(additional) && additional !== true && !isNode(s.patternProperties)) {
        fail(
          `${path}/required`,
          `the required property "${name}" is not in \`properties\` (outputs allow only the listed properties)`,
        );
      }
    }
  }
}

/** The JSON pointer a local `$ref` names ('' for the root); anything else is a 400. */
function resolveRef(ref: string, root: unknown, path: string): string {
  if (ref !== '#' && !ref.startsWith('#/'))
    fail(`${path}/$ref`, `only local references ("#" or "#/...") are supported, not ${JSON.stringify(ref)}`);
  const ptr = ref.slice(1);
  let node: unknown = root;
  for (const part of ptr.split('/').slice(1)) {
    const key = decodeURIComponent(part).replaceAll('~1', '/').replaceAll('~0', '~');
    node = isNode(node) ? node[key] : Array.isArray(node) ? node[Number(key)] : undefined;
    if (node === undefined) fail(`${path}/$ref`, `${JSON.stringify(ref)} names nothing in the schema`);
  }
  return ptr;
}

/** Schema levels from a subschema down to one below it (`rel`: the pointer between them), or
 * undefined if the way passes through a definitions map (a definition counts where it is used). */
function levels(rel: string): number | undefined {
  const parts = rel.split('/').slice(1);
  let n = 0;
  for (let i = 0; i < parts.length; i++) {
    const k = parts[i]!;
    if (DEFS.has(k)) return undefined;
    if (MAP.has(k) || LIST.has(k)) i++; // the property name / index that follows
    n++;
  }
  return n;
}

/**
 * Follows `$ref`s from the root: a reference that leads back to a schema it is inside of is a cycle
 * (a recursive schema, unbounded for the grammar: 400); the depth through references is bounded.
 */
function checkRefs(scan: Scan): void {
  const state = new Map<string, 'open' | number>();
  const walk = (ptr: string, chain: string[]): number => {
    const s = state.get(ptr);
    if (s === 'open')
      fail(
        '',
        `recursive $ref: ${[...chain.slice(chain.indexOf(ptr)), ptr].map(at).join(' -> ')} (cyclic references are not supported)`,
      );
    if (typeof s === 'number') return s;
    state.set(ptr, 'open');
    let deepest = scan.depth.get(ptr) ?? 1;
    for (const [from, target] of scan.refs) {
      if (from !== ptr && !from.startsWith(`${ptr}/`)) continue;
      const n = levels(from.slice(ptr.length));
      if (n !== undefined) deepest = Math.max(deepest, n + walk(target, [...chain, ptr]));
    }
    if (deepest > scan.limits.depth)
      fail(ptr, `nested more than ${scan.limits.depth} levels deep (counting through $ref)`);
    state.set(ptr, deepest);
    return deepest;
  };
  walk('', []);
}

/** Throws InvalidSchemaError unless the schema is within the limits and fully supported. */
export function checkSchemaLimits(schema: unknown, limits: SchemaLimits = SCHEMA_LIMITS): void {
  if (!isNode(schema))
    fail(
      '',
      schema === false ? '`false` accepts no value (the schema is unsatisfiable)' : 'the schema must be a JSON object',
    );
  const chars = JSON.stringify(schema).length;
  if (chars > limits.chars) fail('', `${chars} characters of JSON, more than the limit of ${limits.chars}`);
  const scan: Scan = { limits, nodes: 0, refs: new Map(), depth: new Map() };
  checkNode(schema, '', '', scan, schema);
  checkRefs(scan);
}
