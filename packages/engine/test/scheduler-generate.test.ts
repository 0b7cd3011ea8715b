// Engine.generate on the engine's one scheduler (tiny Llama fixture): concurrent calls share steps,
// a 64-token KV cache forces preemption by recompute, yet every greedy and seeded output equals the
// request run alone; a constraint that throws fails its own call only; the cache ends all free.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Engine, type GenerateRequest } from '../src/index.js';
import { modelDir } from './helpers/fixtures.js';

let small: Engine;
let roomy: Engine;
beforeAll(async () => {
  [small, roomy] = await Promise.all([
    Engine.load(modelDir('llama'), {
      backend: 'cpu',
      threads: 1,
      kvCacheTokens: 64,
      blockSize: 16,
      maxBatchTokens: 32,
    }),
    Engine.load(modelDir('llama'), { backend: 'cpu', threads: 1 }),
  ]);
});
afterAll(async () => {
  await small?.close();
  await roomy?.close();
});

const requests: GenerateRequest[] = Array.from({ length: 6 }, (_, i) => ({
  prompt: Array.from({ length: 6 + i }, (_, k) => 20 + ((i * 13 + k * 7) % 400)),
  sampling: {
    maxTokens: 30 + i * 3,
    ignoreEos: true,
    ...(i % 2 ? { temperature: 0.9, seed: 7 + i, repetitionPenalty: 1.1 } : { temperature: 0 }),
  },
}));

describe('Engine.generate on the shared scheduler', () => {
  it('preempts by recompute on a small cache; outputs equal each request alone; every block comes back', async () => {
    const alone = [];
    for (const r of requests) alone.push((await roomy.generate([r]))[0]!.tokens);
    const before = small.scheduler.preemptions;
    const outs = await small.generate(requests);
    expect(small.scheduler.preemptions).toBeGreaterThan(before);
    expect(outs.map((o) => o.tokens)).toEqual(alone);
    expect(small.kvUsage()).toEqual({ freeBlocks: 4, totalBlocks: 4, blockSize: 16 });
  });

  it('concurrent calls share the scheduler and still equal their runs alone', async () => {
    const alone = await Promise.all(requests.slice(0, 3).map(async (r) => (await roomy.generate([r]))[0]!.tokens));
    const outs = await Promise.all(requests.slice(0, 3).map((r) => roomy.generate([r])));
    expect(outs.map((o) => o[0]!.tokens)).toEqual(alone);
  });

  it('a constraint that throws fails its own call, not a concurrent one', async () => {
    const bad = roomy.generate([
      {
        prompt: [1, 2, 3],
        sampling: { maxTokens: 8 },
        constraint: {
          nextMask: () => {
            throw new Error('grammar broke');
          },
          accept: () => undefined,
        },
      },
    ]);
    const good = roomy.generate([requests[0]!]);
    await expect(bad).rejects.toThrow(/grammar broke/);
    expect((await good)[0]!.tokens).toHaveLength(30);
    expect(roomy.kvUsage().freeBlocks).toBe(roomy.kvUsage().totalBlocks);
  });
});
