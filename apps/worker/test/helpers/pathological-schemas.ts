// Schemas an attacker (or a careless client) sends to break JSON mode: each must be refused with a
// 400 naming the problem (the regular expression matches the message) before the grammar compiler
// sees it. Shared by the unit test of the checks and the end-to-end isolation test.

/** An object nested `depth` levels deep, a string at the bottom. */
export function nested(depth: number): Record<string, unknown> {
  let s: Record<string, unknown> = { type: 'string' };
  for (let i = 0; i < depth; i++) s = { type: 'object', properties: { a: s }, required: ['a'] };
  return s;
}

export const PATHOLOGICAL: Array<[string, unknown, RegExp]> = [
  ['an object nested 100 deep', nested(100), /nested more than 32 levels deep/],
  ['an object nested 2,000 deep', nested(2000), /nested more than 32 levels deep/],
  ['a self-referencing $ref', { type: 'object', properties: { next: { $ref: '#' } } }, /recursive \$ref/],
  ['the root as its own $ref', { $ref: '#' }, /recursive \$ref/],
  [
    'mutually recursive $refs',
    {
      $ref: '#/$defs/a',
      $defs: {
        a: { type: 'object', properties: { b: { $ref: '#/$defs/b' } } },
        b: { anyOf: [{ $ref: '#/$defs/a' }, { type: 'null' }] },
      },
    },
    /recursive \$ref: .*\$defs\/a.*\$defs\/b/,
  ],
  [
    'a huge enum',
    { type: 'string', enum: Array.from({ length: 5000 }, (_, i) => `value-${i}`) },
    /more than 1024 values/,
  ],
  [
    'a huge schema',
    {
      type: 'object',
      properties: Object.fromEntries(Array.from({ length: 6000 }, (_, i) => [`p${i}`, { type: 'integer' }])),
    },
    /more than 5000 subschemas/,
  ],
  ['a huge length bound', { type: 'string', maxLength: 100_000_000 }, /exceeds the limit/],
  ['{"not": {}}', { not: {} }, /`not: \{\}` accepts no value/],
  ['`not` of a schema', { type: 'string', not: { const: 'x' } }, /`not` is not supported/],
  ['a false subschema in anyOf', { anyOf: [false] }, /`false` accepts no value/],
  ['an empty enum', { enum: [] }, /empty enum accepts no value/],
  ['an unknown keyword', { type: 'object', 'x-extension': true }, /unknown or unsupported keyword `x-extension`/],
  ['multipleOf (ignored by the grammar engine)', { type: 'integer', multipleOf: 7 }, /`multipleOf` is not supported/],
  ['uniqueItems', { type: 'array', items: { type: 'integer' }, uniqueItems: true }, /`uniqueItems` is not supported/],
  ['if / then', { if: { type: 'integer' }, then: { minimum: 5 } }, /`if` is not supported/],
  ['allOf of two schemas', { allOf: [{ type: 'object' }, { required: ['a'] }] }, /`allOf` of more than one schema/],
  ['a required property the output may not have', { type: 'object', required: ['a'] }, /"a" is not in `properties`/],
  ['an enum of the wrong type', { type: 'string', enum: [1, 2] }, /no value of `enum` has the type "string"/],
];

/** An allowed schema whose compile takes a while (hundreds of ms or more): 1,000 integer properties. */
export const SLOW = {
  type: 'object',
  properties: Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`p${i}`, { type: 'integer' }])),
  additionalProperties: false,
};
