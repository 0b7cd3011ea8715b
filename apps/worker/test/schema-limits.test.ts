// The checks a JSON schema passes before the grammar compiler sees it (structured/schema-limits.ts):
// every schema the JSON-mode tests generate passes; limits, $ref cycles, unsupported keywords and
// unsatisfiable schemas are refused with a message naming the problem and where it is.
import { describe, expect, it } from 'vitest';
import { checkSchemaLimits, InvalidSchemaError } from '../src/structured/schema-limits.js';
import { randomSchema } from './helpers/random-schema.js';
import { PATHOLOGICAL, nested } from './helpers/pathological-schemas.js';

describe('checkSchemaLimits', () => {
  it('passes every random test schema, a 20-deep nesting and a shared definition', () => {
    for (let i = 0; i < 400; i++) checkSchemaLimits(randomSchema(1000 + i));
    checkSchemaLimits(nested(20));
    const person = { type: 'object', properties: { n: { type: 'string' } }, required: ['n'] };
    checkSchemaLimits({
      $defs: { p: person },
      type: 'object',
      properties: { a: { $ref: '#/$defs/p' }, b: { $ref: '#/$defs/p' } },
      required: ['a', 'b'],
    });
    checkSchemaLimits({
      type: 'object',
      properties: { a: { type: 'integer', minimum: 1, maximum: 1 } },
      required: ['a'],
      additionalProperties: false,
    });
  });

  for (const [what, schema, message] of PATHOLOGICAL) {
    it(`refuses ${what}`, () => {
      expect(() => checkSchemaLimits(schema)).toThrow(InvalidSchemaError);
      expect(() => checkSchemaLimits(schema)).toThrow(message);
    });
  }

  it('counts depth through a chain of $refs', () => {
    const chain: Record<string, unknown> = { $ref: '#/$defs/d0', $defs: {} };
    for (let i = 0; i < 40; i++)
      (chain.$defs as Record<string, unknown>)[`d${i}`] = {
        type: 'object',
        properties: { x: i === 39 ? { type: 'string' } : { $ref: `#/$defs/d${i + 1}` } },
      };
    expect(() => checkSchemaLimits(chain)).toThrow(/more than 32 levels deep \(counting through \$ref\)/);
  });

  it('names the contradiction', () => {
    expect(() => checkSchemaLimits({ type: 'integer', minimum: 5, maximum: 1 })).toThrow(
      /minimum 5 is greater than maximum 1/,
    );
    expect(() => checkSchemaLimits({ type: 'string', minLength: 5, maxLength: 2 })).toThrow(
      /minLength 5 is greater than maxLength 2/,
    );
    expect(() => checkSchemaLimits({ type: 'integer', exclusiveMinimum: 1, exclusiveMaximum: 2 })).toThrow(
      /no integer/,
    );
    expect(() => checkSchemaLimits({ type: 'object', properties: { a: false }, required: ['a'] })).toThrow(
      /#\/properties\/a: `false` accepts no value/,
    );
    expect(() => checkSchemaLimits({ type: 'string', const: 3 })).toThrow(/no value of `const`/);
    expect(() =>
      checkSchemaLimits({ type: 'object', properties: { a: { $ref: 'https://example.com/s.json' } } }),
    ).toThrow(/only local references/);
  });
});
