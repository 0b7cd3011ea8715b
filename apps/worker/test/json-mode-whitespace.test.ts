// JSON mode keeps the model's own way of writing JSON. The trained demo model (packages/cli/demo-model, see its
// MANIFEST.md) has an `extract` adapter fine-tuned to answer "<Name> is <age>" with compact JSON
// ({"name":"Ada","age":36}). Whitespace between JSON tokens is free in JSON mode (bounded), so whenever the
// model's unconstrained output is already valid, JSON mode must not change a byte of it: with
// response_format json_object and with a json_schema, greedy, through the worker's real HTTP app.
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorker, type Worker } from '../src/worker.js';
import { poster } from './helpers/http.js';

const TRAINED = resolve(fileURLToPath(import.meta.url), '../../../../packages/cli/demo-model');
const SCHEMA = {
  type: 'object',
  properties: { name: { type: 'string' }, age: { type: 'integer' } },
  required: ['name', 'age'],
  additionalProperties: false,
};
/** First names of well-known computer scientists (the kind of list the adapter was trained on). */
const NAMES = [
  'Ada',
  'Alan',
  'Grace',
  'Linus',
  'Donald',
  'Edsger',
  'Barbara',
  'Ken',
  'Dennis',
  'Bjarne',
  'Guido',
  'John',
  'Tim',
  'Vint',
  'Margaret',
  'Niklaus',
  'Tony',
  'Leslie',
  'Frances',
  'Claude',
  'Richard',
  'Larry',
  'Brian',
  'Robin',
  'Judea',
  'Shafi',
  'Silvio',
  'Whitfield',
  'Martin',
  'Yukihiro',
  'James',
  'Anders',
  'Radia',
  'Fran',
  'Jean',
  'Adi',
];

/** `n` distinct inputs "<Name> is <age>", ages 1-99, from a fixed seed (mulberry32; the MANIFEST names no held-out set). */
function inputs(n: number, seed: number): string[] {
  let s = seed >>> 0;
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const out = new Set<string>();
  while (out.size < n) out.add(`${NAMES[Math.floor(next() * NAMES.length)]} is ${1 + Math.floor(next() * 99)}`);
  return [...out];
}

let worker: Worker;
let post: ReturnType<typeof poster>;

beforeAll(async () => {
  const dirs = { model: join(TRAINED, 'base'), adapterDir: join(TRAINED, 'adapters') };
  worker = await createWorker({ ...dirs, backend: 'cpu', threads: 1, maxAdapters: 1 });
  post = poster((p, init) => worker.app.request(p, init));
});

afterAll(async () => {
  await worker?.shutdown();
});

type Mode = 'off' | 'json_object' | 'json_schema';
const FORMATS: Record<Mode, object | undefined> = {
  off: undefined,
  json_object: { type: 'json_object' },
  json_schema: { type: 'json_schema', json_schema: { name: 'person', schema: SCHEMA, strict: true } },
};

async function extract(input: string, mode: Mode): Promise<{ content: string; finish: string }> {
  const format = FORMATS[mode];
  const r = await post('/v1/chat/completions', {
    model: 'extract',
    messages: [{ role: 'user', content: input }],
    max_tokens: 40,
    temperature: 0,
    ...(format ? { response_format: format } : {}),
  });
  const body = (await r.json()) as { choices: Array<{ message: { content: string }; finish_reason: string }> };
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(body)}`);
  return { content: body.choices[0]!.message.content, finish: body.choices[0]!.finish_reason };
}

describe('JSON mode keeps the trained adapter’s compact JSON', () => {
  it('100 inputs: byte-identical outputs with JSON mode off, json_object and json_schema (greedy)', async () => {
    const xs = inputs(100, 20261208);
    // All requests at once: the scheduler batches them (each sequence has its own grammar state).
    const [off, object, schema] = await Promise.all(
      (['off', 'json_object', 'json_schema'] as const).map((mode) => Promise.all(xs.map((x) => extract(x, mode)))),
    );
    const validate = new Ajv({ strict: false }).compile(SCHEMA);
    const valid = off!.map((o) => {
      try {
        return validate(JSON.parse(o.content));
      } catch {
        return false;
      }
    });
    const same = (outs: Array<{ content: string }>): number =>
      outs.filter((o, i) => o.content === off![i]!.content).length;
    const agreement = { valid: valid.filter(Boolean).length, json_object: same(object!), json_schema: same(schema!) };
    const example = [off![0]!.content, object![0]!.content, schema![0]!.content];
    console.log('agreement with JSON mode off (of 100):', JSON.stringify(agreement), 'e.g.', ...example);
    // The model writes compact JSON, as trained (not JSON mode's old ", " / ": ").
    expect(off![0]!.content).toMatch(/^\{"name":"[A-Za-z]+","age":\d+\}$/);
    for (let i = 0; i < xs.length; i++) {
      if (!valid[i]) continue; // JSON mode has to change an invalid output
      expect({ input: xs[i], out: object![i]!.content }).toEqual({ input: xs[i], out: off![i]!.content });
      expect({ input: xs[i], out: schema![i]!.content }).toEqual({ input: xs[i], out: off![i]!.content });
      expect(object![i]!.finish).toBe('stop');
      expect(schema![i]!.finish).toBe('stop');
    }
    expect(agreement.valid).toBeGreaterThanOrEqual(95);
  }, 600_000);
});
