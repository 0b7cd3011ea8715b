// JSON mode's whitespace rule (src/structured/json-whitespace.ts): free between JSON tokens, at most
// MAX_WHITESPACE characters per gap — in the schema's own rules and in xgrammar's built-in rules for any value
// (which its maxWhitespaceCnt option leaves unbounded) — and quoted literals untouched. Checked on the grammars
// the engine thread compiles (the same conversion, in this process).
import { beforeAll, describe, expect, it } from 'vitest';
import { boundWhitespace, jsonGrammar, MAX_WHITESPACE } from '../src/structured/json-whitespace.js';
import { loadXgrammar, type XgGrammar, type Xgrammar } from '../src/structured/xgrammar.js';

type Testings = { isGrammarAcceptString(grammar: XgGrammar, input: string): Promise<boolean> };
let xg: Xgrammar & { Testings: Testings };

beforeAll(() => {
  xg = loadXgrammar() as Xgrammar & { Testings: Testings };
});

/** The grammar the engine thread compiles for `schema` (strict as for a json_schema; any object when undefined). */
const grammarFor = (schema: object | undefined): Promise<XgGrammar> =>
  jsonGrammar(xg, JSON.stringify(schema ?? { type: 'object' }), schema !== undefined);

const accepts = (g: XgGrammar, s: string): Promise<boolean> => xg.Testings.isGrammarAcceptString(g, s);
const ws = (n: number): string => ' '.repeat(n);
const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    age: { type: 'integer' },
    tags: { type: 'array', items: { type: 'string' } },
    extra: { type: 'object' },
  },
  required: ['name', 'age'],
  additionalProperties: false,
};

describe('boundWhitespace', () => {
  it('bounds every free run in place, copying literals and classes as they are', () => {
    const out = boundWhitespace('root ::= "{" [ \\n\\t]* "[ \\n\\t]*" [[ \\n\\t]* [ \\n\\t]* "\\"[ \\n\\t]*" "}"', 4);
    expect(out).toBe('root ::= "{" [ \\n\\t]{0,4} "[ \\n\\t]*" [[ \\n\\t]* [ \\n\\t]{0,4} "\\"[ \\n\\t]*" "}"');
    expect(() => boundWhitespace('root ::= "a"', 0)).toThrow(RangeError);
  });
});

describe('the grammars JSON mode compiles', () => {
  it('a schema: compact and spaced JSON pass; commas and colons stay required', async () => {
    const g = await grammarFor(PERSON);
    const right = [
      '{"name":"Ada","age":36}',
      '{"name": "Ada", "age": 36}',
      '{ "name" : "Ada" , "age" : 36 }',
      '{"name":"Ada",\n"age":36}',
      '{"name":"Ada","age":36,"extra":{"a":[1, {"b" :null}]}}',
      '{\t"name":"Ada","age":36,"tags":[ "x" ]}',
    ];
    if (MAX_WHITESPACE >= 5) right.push('{\n  "name": "Ada",\n  "age": 36,\n  "tags": [\n    "x"\n  ]\n}');
    for (const s of right) {
      expect({ s, ok: await accepts(g, s) }).toEqual({ s, ok: true });
    }
    const wrong = [
      '{"name":"Ada"}',
      '{"name":"Ada","age":36,"x":1}',
      ' {"name":"Ada","age":36}',
      '{"name":"Ada" "age":36}',
      '{"name" "Ada","age":36}',
      '{"name":"Ada","age":36,"tags":["a" "b"]}',
      '{"name":"Ada","age":36,"tags":["a"\n"b"]}',
      '{"name":"Ada","age":36,"extra":{"a":[1 2]}}',
      '{"name":"Ada","age":36,"extra":{"a":1 "b":2}}',
    ];
    for (const s of wrong) {
      expect({ s, ok: await accepts(g, s) }).toEqual({ s, ok: false });
    }
    g.dispose();
  });

  it(`at most ${MAX_WHITESPACE} whitespace characters in a gap, in the schema's rules and in any-value rules`, async () => {
    const schema = await grammarFor(PERSON);
    const anyObject = await grammarFor(undefined);
    const gaps = (n: number): Array<[XgGrammar, string]> => [
      [schema, `{${ws(n)}"name":"Ada","age":36}`],
      [schema, `{"name"${ws(n)}:"Ada","age":36}`],
      [schema, `{"name":${ws(n)}"Ada","age":36}`],
      [schema, `{"name":"Ada"${ws(n)},"age":36}`],
      [schema, `{"name":"Ada","age":36${ws(n)}}`],
      [schema, `{"name":"Ada","age":36,"tags":[${ws(n)}"x"]}`],
      [schema, `{"name":"Ada","age":36,"extra":{"a":[1,${ws(n)}2]}}`],
      [schema, `{"name":"Ada","age":36,"extra":{${ws(n)}"a":1}}`],
      [schema, `{"name":"Ada","age":36,"extra":{"a":1${ws(n)},"b":2}}`],
      [anyObject, `{${ws(n)}"a":1}`],
      [anyObject, `{"a":{"b":[1${ws(n)},2]}}`],
      [anyObject, `{"a":1,${ws(n)}"b":{${ws(n)}}}`],
      [anyObject, `{"a":[${ws(n)}]}`],
      [anyObject, `{"a":"x"${ws(n - 1)}\n}`],
    ];
    for (const [g, s] of gaps(MAX_WHITESPACE)) expect({ s, ok: await accepts(g, s) }).toEqual({ s, ok: true });
    for (const [g, s] of gaps(MAX_WHITESPACE + 1)) expect({ s, ok: await accepts(g, s) }).toEqual({ s, ok: false });
    schema.dispose();
    anyObject.dispose();
  });

  it('an enum value that holds the whitespace rule text stays exact', async () => {
    const g = await grammarFor({
      type: 'object',
      properties: { e: { enum: ['[ \n\t]*', '[ \\n\\t]*'] } },
      required: ['e'],
    });
    expect(await accepts(g, JSON.stringify({ e: '[ \n\t]*' }))).toBe(true);
    expect(await accepts(g, JSON.stringify({ e: '[ \\n\\t]*' }))).toBe(true);
    expect(await accepts(g, JSON.stringify({ e: 'json_ws' }))).toBe(false);
    expect(await accepts(g, JSON.stringify({ e: '' }))).toBe(false);
    g.dispose();
  });
});
