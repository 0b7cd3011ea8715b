// JSON mode end to end on a real worker (the tiny Llama fixture, random weights: the grammar does all
// the work): outputs of many random schemas, greedy and seeded, through the three routes parse with
// JSON.parse and validate with ajv; json_object gives a JSON object; bad schemas are 400s; streaming;
// unconstrained requests batched with constrained ones keep exactly their own output.
import { resolveSampling } from '@loraplex/engine';
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SequenceConstraint } from '../src/structured/constraint.js';
import { createWorker, type Worker } from '../src/worker.js';
import { modelDir, poster, sseData } from './helpers/http.js';
import { randomSchema } from './helpers/random-schema.js';

let worker: Worker;
let post: ReturnType<typeof poster>;
const ajv = new Ajv({ strict: false });
const SCHEMAS = Array.from({ length: 36 }, (_, i) => randomSchema(1000 + i));
/** Enough for every random schema's longest output on this vocabulary (the context is 256). */
const MAX = 200;

beforeAll(async () => {
  worker = await createWorker({ model: modelDir('llama'), backend: 'cpu', threads: 1, maxBatchTokens: 256 });
  post = poster((p, init) => worker.app.request(p, init));
});

afterAll(async () => {
  await worker?.shutdown();
});

const ok = async (r: Response): Promise<any> => {
  const body = await r.json();
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(body)}`);
  return body;
};

function expectValid(text: string, schema: object | undefined): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON: ${JSON.stringify(text)} (${(e as Error).message})`);
  }
  if (schema) {
    const validate = ajv.compile(schema);
    if (!validate(value))
      throw new Error(`${text} does not follow ${JSON.stringify(schema)}: ${ajv.errorsText(validate.errors)}`);
  }
  return value;
}

/** Greedy for even i, seeded sampling (seed i) for odd i. */
const sampling = (i: number): Record<string, unknown> =>
  i % 2 === 0 ? { temperature: 0 } : { temperature: 1, seed: i };

describe('random schemas: outputs parse and validate', () => {
  it('chat completions with json_schema', async () => {
    const rs = await Promise.all(
      SCHEMAS.map((schema, i) =>
        post('/v1/chat/completions', {
          messages: [{ role: 'user', content: 'Give me JSON.' }],
          max_tokens: MAX,
          ...sampling(i),
          response_format: { type: 'json_schema', json_schema: { name: `s${i}`, schema, strict: true } },
        }).then(ok),
      ),
    );
    rs.forEach((r, i) => {
      expect(r.choices[0].finish_reason).toBe('stop');
      expectValid(r.choices[0].message.content, SCHEMAS[i]);
    });
    // Distinct outputs: the grammar constrains, the model still chooses.
    expect(new Set(rs.map((r) => r.choices[0].message.content)).size).toBeGreaterThan(30);
  }, 300_000);

  it('completions with json_schema, n = 3 seeded choices each', async () => {
    const rs = await Promise.all(
      SCHEMAS.map((schema, i) =>
        post('/v1/completions', {
          prompt: `Record ${i}:`,
          max_tokens: MAX,
          n: 3,
          temperature: 0.8,
          seed: 100 + i,
          response_format: { type: 'json_schema', json_schema: { name: `s${i}`, schema } },
        }).then(ok),
      ),
    );
    rs.forEach((r, i) => {
      expect(r.choices).toHaveLength(3);
      for (const c of r.choices) {
        expect(c.finish_reason).toBe('stop');
        expectValid(c.text, SCHEMAS[i]);
      }
    });
  }, 300_000);

  it('LoRAX /generate with {type: json_object, schema}', async () => {
    const rs = await Promise.all(
      SCHEMAS.map((schema, i) =>
        post('/generate', {
          inputs: `Item ${i} as JSON:`,
          parameters: {
            max_new_tokens: MAX,
            details: true,
            ...(i % 2 === 0 ? {} : { do_sample: true, seed: i }),
            response_format: { type: 'json_object', schema },
          },
        }).then(ok),
      ),
    );
    rs.forEach((r, i) => {
      expect(r.details.finish_reason).toBe('eos_token');
      expectValid(r.generated_text, SCHEMAS[i]);
    });
  }, 300_000);

  it('the same seeded request gives the same output (the grammar state is per sequence)', async () => {
    const body = {
      prompt: 'Again:',
      max_tokens: MAX,
      temperature: 1,
      seed: 7,
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: SCHEMAS[3] } },
    };
    const [a, b] = await Promise.all([post('/v1/completions', body).then(ok), post('/v1/completions', body).then(ok)]);
    expect(a.choices[0].text).toBe(b.choices[0].text);
    expectValid(a.choices[0].text, SCHEMAS[3]);
  }, 60_000);
});

describe('json_object without a schema', () => {
  it('gives a JSON object, or a clean length cut-off', async () => {
    const rs = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        post('/v1/chat/completions', {
          messages: [{ role: 'user', content: 'JSON please' }],
          max_tokens: MAX,
          ...sampling(i),
          response_format: { type: 'json_object' },
        }).then(ok),
      ),
    );
    let complete = 0;
    for (const r of rs) {
      const c = r.choices[0];
      expect(c.message.content.startsWith('{')).toBe(true);
      if (c.finish_reason === 'length') continue; // any JSON object may be longer than max_tokens
      expect(c.finish_reason).toBe('stop');
      const v = expectValid(c.message.content, undefined);
      expect(typeof v === 'object' && v !== null && !Array.isArray(v)).toBe(true);
      complete++;
    }
    expect(complete).toBeGreaterThan(0);
  }, 120_000);

  it('LoRAX json_object with no schema, and a schema given as a JSON string', async () => {
    const schema = {
      type: 'object',
      properties: { ok: { type: 'boolean' } },
      required: ['ok'],
      additionalProperties: false,
    };
    const r = await ok(
      await post('/generate', {
        inputs: 'x',
        parameters: { max_new_tokens: 50, response_format: { type: 'json_object', schema: JSON.stringify(schema) } },
      }),
    );
    expectValid(r.generated_text, schema);
    const r2 = await post('/generate', {
      inputs: 'x',
      parameters: { max_new_tokens: 5, response_format: { type: 'json_object' } },
    });
    expect(r2.status).toBe(200);
    expect(((await r2.json()) as { generated_text: string }).generated_text.startsWith('{')).toBe(true);
  }, 60_000);

  it('max_tokens cuts JSON mode off with finish_reason length', async () => {
    const r = await ok(
      await post('/v1/completions', {
        prompt: 'x',
        max_tokens: 3,
        temperature: 0,
        response_format: { type: 'json_schema', json_schema: { name: 'x', schema: SCHEMAS[0] } },
      }),
    );
    expect(r.choices[0].finish_reason).toBe('length');
    expect(() => JSON.parse(r.choices[0].text)).toThrow();
  });
});

describe('invalid schemas and formats are 400s', () => {
  const cases: Array<[string, unknown]> = [
    ['a type that is not a type', { type: 'objekt' }],
    ['a non-string type', { type: 5 }],
    ['a dangling $ref', { type: 'object', properties: { a: { $ref: '#/$defs/nope' } } }],
    ['a pattern that does not parse', { type: 'string', pattern: '((' }],
    ['a schema that is not an object', [1, 2]],
  ];
  for (const [what, schema] of cases) {
    it(`chat: ${what}`, async () => {
      const r = await post('/v1/chat/completions', {
        messages: [{ role: 'user', content: 'x' }],
        max_tokens: 5,
        response_format: { type: 'json_schema', json_schema: { name: 'x', schema } },
      });
      expect(r.status).toBe(400);
      const body = (await r.json()) as { error: { type: string; param: string; message: string } };
      expect(body.error.type).toBe('invalid_request_error');
      expect(body.error.param).toMatch(/^response_format/);
      expect(body.error.message).toMatch(/response_format/);
    });
  }

  it('completions and LoRAX name their field; a schema string that is not JSON; an unknown type', async () => {
    const c = await post('/v1/completions', {
      prompt: 'x',
      response_format: { type: 'json_object', schema: { type: 'string', pattern: '((' } },
    });
    expect(c.status).toBe(400);
    expect(((await c.json()) as any).error.message).toMatch(/response_format\.schema: .*(regular expression|pattern)/i);
    const l = await post('/generate', {
      inputs: 'x',
      parameters: { response_format: { type: 'json_object', schema: '{not json' } },
    });
    expect(l.status).toBe(400);
    const lb = (await l.json()) as { error: string; error_type: string };
    expect(lb.error_type).toBe('validation');
    expect(lb.error).toMatch(/parameters\.response_format\.schema/);
    const t = await post('/v1/chat/completions', {
      messages: [{ role: 'user', content: 'x' }],
      response_format: { type: 'grammar' },
    });
    expect(t.status).toBe(400);
    const lt = await post('/generate', { inputs: 'x', parameters: { response_format: { type: 'json_schema' } } });
    expect(lt.status).toBe(400);
  });

  it('a schema ajv accepts but the grammar compiler cannot build is a 400 with its reason', async () => {
    const r = await post('/v1/chat/completions', {
      messages: [{ role: 'user', content: 'x' }],
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'x', schema: { type: 'string', pattern: '(?<=a)b' } },
      },
    });
    expect(r.status).toBe(400);
    const body = (await r.json()) as any;
    expect(body.error.param).toBe('response_format.json_schema.schema');
    expect(body.error.message).toMatch(/not supported by the grammar compiler: \S/);
  });

  it('a rejected schema leaves the worker serving JSON mode', async () => {
    const r = await ok(
      await post('/v1/completions', {
        prompt: 'x',
        max_tokens: MAX,
        temperature: 0,
        response_format: { type: 'json_schema', json_schema: { name: 'x', schema: SCHEMAS[1] } },
      }),
    );
    expectValid(r.choices[0].text, SCHEMAS[1]);
  });
});

describe('streaming and batching', () => {
  it('streams JSON mode on chat, completions and /generate_stream; the deltas join to valid JSON', async () => {
    const schema = SCHEMAS[4]!;
    const chat = sseData(
      await (
        await post('/v1/chat/completions', {
          messages: [{ role: 'user', content: 'x' }],
          max_tokens: MAX,
          temperature: 0,
          stream: true,
          response_format: { type: 'json_schema', json_schema: { name: 'x', schema } },
        })
      ).text(),
    );
    expect(chat.at(-1)).toBe('[DONE]');
    const chunks = chat.slice(0, -1) as any[];
    expectValid(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), schema);
    expect(chunks.at(-1).choices[0].finish_reason).toBe('stop');

    const comp = sseData(
      await (
        await post('/v1/completions', {
          prompt: 'x',
          max_tokens: MAX,
          temperature: 0,
          stream: true,
          response_format: { type: 'json_schema', json_schema: { name: 'x', schema } },
        })
      ).text(),
    );
    expectValid((comp.slice(0, -1) as any[]).map((c) => c.choices[0].text).join(''), schema);

    const gen = sseData(
      await (
        await post('/generate_stream', {
          inputs: 'x',
          parameters: { max_new_tokens: MAX, details: true, response_format: { type: 'json_object', schema } },
        })
      ).text(),
    ) as any[];
    const last = gen.at(-1);
    expect(last.details.finish_reason).toBe('eos_token');
    expectValid(last.generated_text, schema);
    expect(gen.map((e) => e.token.text).join('')).toBe(last.generated_text);
  }, 120_000);

  it('unconstrained requests batched with constrained ones keep exactly their own output (greedy and seeded)', async () => {
    const plain = (i: number): Record<string, unknown> => ({
      prompt: `Once upon a time ${i}`,
      max_tokens: 40,
      ignore_eos: true,
      ...sampling(i),
    });
    const alone = await Promise.all(
      [0, 1, 2, 3].map(async (i) => (await ok(await post('/v1/completions', plain(i)))).choices[0].text as string),
    );
    const mixed = await Promise.all([
      ...[0, 1, 2, 3].map((i) => post('/v1/completions', plain(i)).then(ok)),
      ...SCHEMAS.slice(0, 8).map((schema, i) =>
        post('/v1/completions', {
          prompt: 'JSON:',
          max_tokens: MAX,
          ...sampling(i),
          response_format: { type: 'json_schema', json_schema: { name: 'x', schema } },
        }).then(ok),
      ),
    ]);
    expect(mixed.slice(0, 4).map((r) => r.choices[0].text)).toEqual(alone);
    mixed.slice(4).forEach((r, i) => expectValid(r.choices[0].text, SCHEMAS[i]));
  }, 120_000);

  it('a grammar that fails fails its own sequence only', async () => {
    const tk = worker.engine.tokenizer!;
    const prompt = await tk.encode('Once upon a time');
    const sampling = resolveSampling({ maxTokens: 12, temperature: 0, ignoreEos: true }, worker.engine.config.vocab);
    const base = {
      adapter: undefined,
      prompt,
      sampling,
      stop: [],
      includeStopString: false,
      promptLogprobs: false,
      route: 'test',
    };
    const broken: SequenceConstraint = {
      nextMask: () => Promise.reject(new Error('matcher exploded')),
      accept: () => true,
      complete: false,
      dispose: () => undefined,
    };
    const alone = await worker.scheduler.submit({ ...base }).done;
    const [bad, good] = [
      worker.scheduler.submit({ ...base, constraint: broken }),
      worker.scheduler.submit({ ...base }),
    ];
    await expect(bad.done).rejects.toThrow(/the grammar failed: matcher exploded/);
    expect((await good.done).tokens.map((t) => t.token)).toEqual(alone.tokens.map((t) => t.token));
  });

  it('clients that disconnect mid-stream free their grammar states; JSON mode keeps working', async () => {
    const engine = worker.engine;
    const step = engine.runStep.bind(engine);
    engine.runStep = async (items) => {
      await new Promise((r) => setTimeout(r, 2)); // steps long enough for aborts to land between and during them
      return step(items);
    };
    try {
      await Promise.all(
        Array.from({ length: 6 }, async (_, i) => {
          const ac = new AbortController();
          const r = await post(
            '/v1/completions',
            {
              prompt: 'x',
              max_tokens: MAX,
              n: 2,
              temperature: 1,
              seed: i,
              stream: true,
              response_format: { type: 'json_object' },
            },
            { signal: ac.signal },
          );
          const reader = r.body!.getReader();
          for (let k = 0; k < 1 + (i % 3) * 4; k++) await reader.read();
          ac.abort();
        }),
      );
      const t0 = Date.now();
      while (worker.scheduler.runningCount > 0 && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 5));
      expect(worker.scheduler.runningCount).toBe(0);
      expect(engine.kvUsage().freeBlocks).toBe(engine.kvUsage().totalBlocks);
    } finally {
      engine.runStep = step;
    }
    const r = await ok(
      await post('/v1/completions', {
        prompt: 'x',
        max_tokens: MAX,
        temperature: 0,
        response_format: { type: 'json_schema', json_schema: { name: 'x', schema: SCHEMAS[5] } },
      }),
    );
    expectValid(r.choices[0].text, SCHEMAS[5]);
  });

  it('compiles each schema once (LRU cache)', async () => {
    const before = worker.structured.cacheStats;
    await Promise.all(
      [0, 1, 2].map(() =>
        post('/v1/completions', {
          prompt: 'x',
          max_tokens: 5,
          response_format: { type: 'json_schema', json_schema: { name: 'x', schema: SCHEMAS[2] } },
        }).then(ok),
      ),
    );
    const after = worker.structured.cacheStats;
    expect(after.misses).toBe(before.misses);
    expect(after.hits).toBe(before.hits + 3);
  });
});
