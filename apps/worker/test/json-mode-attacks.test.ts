// Pathological JSON schemas sent to a real worker (the tiny Llama fixture) on the OpenAI and LoRAX
// routes: each is a 400 naming the problem, the worker's /health answers within 100 ms while it is
// handled (nothing long runs on the event loop), and a normal JSON-mode request right after still
// returns schema-valid output (the grammar engine was not damaged).
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorker, type Worker } from '../src/worker.js';
import { modelDir, poster } from './helpers/http.js';
import { PATHOLOGICAL } from './helpers/pathological-schemas.js';
import { MAX_JSON_DEPTH } from '@loraplex/protocol';

let worker: Worker;
let post: ReturnType<typeof poster>;
const NORMAL = {
  type: 'object',
  properties: {
    ok: { type: 'boolean' },
    n: { type: 'integer', minimum: 0, maximum: 99 },
    tag: { type: 'string', enum: ['a', 'b'] },
  },
  required: ['ok', 'n', 'tag'],
  additionalProperties: false,
};
const validate = new Ajv().compile(NORMAL);

beforeAll(async () => {
  worker = await createWorker({ model: modelDir('llama'), backend: 'cpu', threads: 1, maxBatchTokens: 256 });
  post = poster((p, init) => worker.app.request(p, init));
  // JSON mode set up (vocabulary pass, first compile) before anything is timed.
  await post('/v1/completions', {
    prompt: 'x',
    max_tokens: 40,
    temperature: 0,
    response_format: { type: 'json_schema', json_schema: { name: 'n', schema: NORMAL } },
  });
});

afterAll(async () => {
  await worker?.shutdown();
});

/** Sends `attack`, and /health while it is handled; returns the attack's response and how long /health took. */
async function underAttack(attack: () => Promise<Response>): Promise<{ r: Response; healthMs: number }> {
  const pending = attack();
  const t0 = performance.now();
  const h = await worker.app.request('/health');
  const healthMs = performance.now() - t0;
  expect(h.status).toBe(200);
  return { r: await pending, healthMs };
}

async function expectNormalStillWorks(): Promise<void> {
  const r = await post('/v1/chat/completions', {
    messages: [{ role: 'user', content: 'JSON' }],
    max_tokens: 60,
    temperature: 1,
    seed: 3,
    response_format: { type: 'json_schema', json_schema: { name: 'n', schema: NORMAL } },
  });
  expect(r.status).toBe(200);
  const body = (await r.json()) as { choices: Array<{ message: { content: string }; finish_reason: string }> };
  expect(body.choices[0]!.finish_reason).toBe('stop');
  expect(validate(JSON.parse(body.choices[0]!.message.content))).toBe(true);
}

/** How deep a value nests arrays and objects (a body nesting more is refused before any route reads it). */
function nesting(v: unknown): number {
  let depth = 0,
    max = 0;
  for (const ch of JSON.stringify(v)) {
    if (ch === '{' || ch === '[') max = Math.max(max, ++depth);
    else if (ch === '}' || ch === ']') depth--;
  }
  return max;
}

describe('pathological schemas', () => {
  for (const [what, schema, schemaMessage] of PATHOLOGICAL) {
    // The request wraps the schema 3 (chat) or 4 (LoRAX) levels deep; a schema that makes the body
    // nest past the body parser's bound is refused by it, with its own message, before the schema check.
    const tooDeepForBody = nesting(schema) + 4 > MAX_JSON_DEPTH;
    const message = tooDeepForBody ? new RegExp(`more than ${MAX_JSON_DEPTH} levels deep`) : schemaMessage;
    it(`${what}: 400 on the OpenAI and LoRAX routes, /health stays fast, JSON mode keeps working`, async () => {
      const chat = await underAttack(() =>
        post('/v1/chat/completions', {
          messages: [{ role: 'user', content: 'x' }],
          max_tokens: 20,
          response_format: { type: 'json_schema', json_schema: { name: 'x', schema } },
        }),
      );
      expect(chat.r.status).toBe(400);
      const cb = (await chat.r.json()) as { error: { type: string; param: string; message: string } };
      expect(cb.error.type).toBe('invalid_request_error');
      expect(cb.error.param).toBe(tooDeepForBody ? null : 'response_format.json_schema.schema');
      expect(cb.error.message).toMatch(message);
      expect(chat.healthMs).toBeLessThan(100);

      const lorax = await underAttack(() =>
        post('/generate', {
          inputs: 'x',
          parameters: { max_new_tokens: 20, response_format: { type: 'json_object', schema } },
        }),
      );
      expect(lorax.r.status).toBe(400);
      const lb = (await lorax.r.json()) as { error: string; error_type: string };
      expect(lb.error_type).toBe('validation');
      expect(lb.error).toMatch(message);
      expect(lorax.healthMs).toBeLessThan(100);

      await expectNormalStillWorks();
    });
  }

  it('a bounded shared definition (a $ref used twice, no cycle) is supported: valid output', async () => {
    const schema = {
      $defs: {
        p: { type: 'object', properties: { on: { type: 'boolean' } }, required: ['on'], additionalProperties: false },
      },
      type: 'object',
      properties: { a: { $ref: '#/$defs/p' }, b: { $ref: '#/$defs/p' } },
      required: ['a', 'b'],
      additionalProperties: false,
    };
    const r = await post('/generate', {
      inputs: 'x',
      parameters: { max_new_tokens: 60, response_format: { type: 'json_object', schema } },
    });
    expect(r.status).toBe(200);
    const out = JSON.parse(((await r.json()) as { generated_text: string }).generated_text);
    expect(new Ajv().compile(schema)(out)).toBe(true);
  });
});
