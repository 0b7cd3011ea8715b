// Scheduler and adapter manager against a fake engine: fairness, slot limits, shared and failed
// loads, LRU eviction, KV admission, chunked prefill, cancellation and drain.
import { describe, expect, it } from 'vitest';
import { CancelledError } from '../src/scheduler/scheduler.js';
import { SequenceError, type Sequence } from '../src/scheduler/sequence.js';
import { params, runToIdle, setup } from './helpers/fake-engine.js';

describe('fairness', () => {
  it('round-robin admission: a rare adapter is admitted right after the popular one, not after its whole queue', async () => {
    const order: string[] = [];
    const { adapters, scheduler } = setup({
      maxAdapters: 2,
      sched: { maxRunning: 1 },
      hooks: { admitted: (s) => order.push(s.params.adapter ?? 'base') },
    });
    await Promise.all([adapters.require('A'), adapters.require('B')]);
    const popular = Array.from({ length: 12 }, () => scheduler.submit(params('A', 3)));
    const rare = scheduler.submit(params('B', 3));
    await Promise.all([...popular, rare].map((s) => s.done));
    // FIFO would admit B 13th; round-robin across adapter queues admits it at most second.
    expect(order.indexOf('B')).toBeLessThanOrEqual(1);
    expect(order.filter((a) => a === 'A')).toHaveLength(12);
  });

  it('with every slot busy, the resident adapter drains so a waiting adapter gets the slot (no starvation)', async () => {
    const finished: string[] = [];
    const { engine, scheduler } = setup({
      maxAdapters: 1,
      sched: { maxRunning: 2 },
      hooks: { finished: (s) => finished.push(s.params.adapter ?? 'base') },
    });
    engine.stepDelayMs = 1;
    const popular = Array.from({ length: 10 }, () => scheduler.submit(params('A', 4)));
    await popular[0]!.admitted;
    const rare = scheduler.submit(params('B', 4));
    await Promise.all([...popular, rare].map((s) => s.done));
    expect(finished.indexOf('B')).toBeLessThan(4); // after at most the A sequences already running
    expect(engine.loads).toEqual(['A', 'B', 'A']);
  });

  it('the base model and adapters share the round-robin', async () => {
    const order: string[] = [];
    const { adapters, scheduler } = setup({
      sched: { maxRunning: 1 },
      hooks: { admitted: (s) => order.push(s.params.adapter ?? 'base') },
    });
    await adapters.require('A');
    const seqs = [
      ...Array.from({ length: 4 }, () => scheduler.submit(params(undefined, 2))),
      ...Array.from({ length: 4 }, () => scheduler.submit(params('A', 2))),
    ];
    await Promise.all(seqs.map((s) => s.done));
    expect(order).toEqual(['base', 'A', 'base', 'A', 'base', 'A', 'base', 'A']);
  });
});

describe('adapters', () => {
  it('never puts more distinct adapters in one step than there are slots', async () => {
    const { engine, scheduler } = setup({ maxAdapters: 2 });
    engine.loadDelayMs = 2;
    engine.stepDelayMs = 1;
    const seqs = ['A', 'B', 'C', 'D', 'A', 'C', undefined, 'B', 'D'].flatMap((a) => [
      scheduler.submit(params(a, 10)),
      scheduler.submit(params(a, 6)),
    ]);
    const results = await Promise.all(seqs.map((s) => s.done));
    expect(results.every((r) => r.tokens.length > 0)).toBe(true);
    for (const step of engine.steps)
      expect(new Set(step.map((i) => i.adapterSlot).filter((s) => s >= 0)).size).toBeLessThanOrEqual(2);
    expect(scheduler.maxAdaptersInStep).toBe(2);
  });

  it('concurrent requests for one adapter share a single load', async () => {
    const { engine, scheduler } = setup();
    engine.loadDelayMs = 20;
    const seqs = Array.from({ length: 5 }, () => scheduler.submit(params('C', 2)));
    await Promise.all(seqs.map((s) => s.done));
    expect(engine.loads).toEqual(['C']);
  });

  it('a failed load fails only the requests for that adapter, with a clear error; the next request retries', async () => {
    const { engine, scheduler } = setup({ adapters: ['A', 'bad'] });
    engine.failLoad.add('bad');
    engine.loadDelayMs = 5;
    const bad = [scheduler.submit(params('bad')), scheduler.submit(params('bad'))];
    const good = [scheduler.submit(params('A')), scheduler.submit(params(undefined))];
    for (const s of bad) {
      const err = await s.done.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(SequenceError);
      expect((err as SequenceError).status).toBe(424);
      expect((err as Error).message).toMatch(/adapter bad failed to load \(ADAPTER_CONFIG\): .*not a LoRA config/);
    }
    for (const s of good) expect((await s.done).tokens).toHaveLength(4);
    engine.failLoad.delete('bad');
    expect((await scheduler.submit(params('bad')).done).tokens).toHaveLength(4);
    expect(engine.loads.filter((n) => n === 'bad')).toHaveLength(2);
  });

  it('evicts the least recently used idle adapter when the slots are full', async () => {
    const { engine, scheduler, adapters } = setup({ maxAdapters: 2 });
    await scheduler.submit(params('A')).done;
    await scheduler.submit(params('B')).done;
    await scheduler.submit(params('A')).done; // A is now more recent than B
    await scheduler.submit(params('C')).done;
    expect(engine.unloads).toEqual(['B']);
    expect(adapters.resident().sort()).toEqual(['A', 'C']);
  });

  it('when the LoRA pool (not the slot count) is full, idle adapters are evicted until the new one fits', async () => {
    const { engine, scheduler, adapters } = setup({ maxAdapters: 3 });
    engine.poolPages = 16;
    engine.ranks = { A: 8, B: 8, C: 16 };
    await scheduler.submit(params('A')).done;
    await scheduler.submit(params('B')).done;
    expect((await scheduler.submit(params('C')).done).tokens).toHaveLength(4);
    expect(engine.unloads).toEqual(['A', 'B']);
    expect(adapters.resident()).toEqual(['C']);
  });

  it('an adapter that cannot fit even in an empty pool fails with a clear error', async () => {
    const { engine, scheduler } = setup({ maxAdapters: 2 });
    engine.poolPages = 8;
    engine.ranks = { D: 16 };
    await expect(scheduler.submit(params('D')).done).rejects.toThrow(/adapter D failed to load \(ADAPTER_POOL_FULL\)/);
  });

  it('loads in the background while other sequences keep decoding', async () => {
    const { engine, scheduler } = setup();
    engine.stepDelayMs = 1;
    engine.loadDelayMs = 40;
    const base = scheduler.submit(params(undefined, 200, [1]));
    await base.admitted;
    const stepsBefore = engine.steps.length;
    const adapted = scheduler.submit(params('A', 2));
    await adapted.admitted;
    expect(engine.steps.length - stepsBefore).toBeGreaterThan(5); // the base sequence decoded during the load
    scheduler.cancel(base);
    await adapted.done;
  });
});

describe('batching and KV', () => {
  it('admits by prompt blocks, grows tables as sequences decode, preempts when the cache runs out, and never overcommits', async () => {
    const { engine, scheduler } = setup({ kvBlocks: 8, blockSize: 4, manual: true });
    // Every step's block tables, copied (the live tables are emptied when a sequence ends).
    const tables: number[][][] = [];
    const runStep = engine.runStep.bind(engine);
    engine.runStep = (items) => {
      tables.push(items.map((it) => Array.from(it.blockTable)));
      return runStep(items);
    };
    const seqs = Array.from({ length: 6 }, () => scheduler.submit(params(undefined, 12, [1, 2, 3, 4]))); // 16 tokens = 4 blocks each
    await runToIdle(scheduler);
    const results = await Promise.all(seqs.map((s) => s.done));
    // Prompt blocks only at admission: more than the 2 whole-length reservations ran together.
    expect(Math.max(...engine.steps.map((st) => st.length))).toBeGreaterThan(2);
    expect(scheduler.preemptions).toBeGreaterThan(0);
    for (const step of tables) {
      const used = step.flat();
      expect(new Set(used).size).toBe(used.length); // no block in two tables
      expect(used.length).toBeLessThanOrEqual(8);
    }
    // Recompute changes nothing: every sequence equals one run with a cache to itself.
    const alone = await setup({ kvBlocks: 8, blockSize: 4 }).scheduler.submit(params(undefined, 12, [1, 2, 3, 4])).done;
    for (const r of results) expect(r.tokens.map((t) => t.token)).toEqual(alone.tokens.map((t) => t.token));
    expect(engine.kvUsage().freeBlocks).toBe(8); // retired right after their last step
  });

  it('preempts the most recently admitted sequence and re-admits it before anything that waited behind it', async () => {
    const preempted: number[] = [];
    const preemptedAt = new Map<number, number>();
    const { engine, scheduler } = setup({
      kvBlocks: 4,
      blockSize: 4,
      sched: { maxRunning: 3 },
      manual: true,
      hooks: { preempted: (s) => (preempted.push(s.id), preemptedAt.set(s.id, engine.steps.length)) },
    });
    // 4 + 12 tokens = the whole cache each; the prompts (one block each) admit three at once, d waits.
    const [a, b, c, d] = Array.from({ length: 4 }, () => scheduler.submit(params(undefined, 12, [1, 2, 3, 4])));
    await runToIdle(scheduler);
    const results = await Promise.all([a, b, c, d].map((s) => s!.done));
    expect(preempted[0]).toBe(c!.id); // the newest running one, not the one that needed the block
    expect(preempted).not.toContain(a!.id); // the oldest never loses its blocks to younger ones
    // After c's preemption, c runs again before (or with) d's first step: it went back to the front.
    const stepsOf = (s: Sequence): number[] =>
      engine.steps.flatMap((st, i) => (st.some((it) => it.blockTable === s.blocks) ? [i] : []));
    const cAgain = stepsOf(c!).find((i) => i >= preemptedAt.get(c!.id)!);
    expect(cAgain).toBeDefined();
    expect(cAgain!).toBeLessThanOrEqual(stepsOf(d!)[0]!);
    for (const r of results) expect(r.tokens).toHaveLength(12);
    expect(engine.kvUsage().freeBlocks).toBe(4);
  });

  it('rejects a request longer than the whole KV cache up front', () => {
    const { scheduler } = setup({ kvBlocks: 4, blockSize: 4 });
    expect(() => scheduler.submit(params(undefined, 20, [1, 2, 3]))).toThrow(/KV blocks/);
  });

  it('chunks prefill under the step budget and mixes decode tokens with prefill chunks', async () => {
    const { engine, scheduler } = setup({ sched: { maxBatchTokens: 8 } });
    const a = scheduler.submit(params(undefined, 6, [1, 2]));
    await a.admitted;
    const b = scheduler.submit(
      params(
        undefined,
        2,
        Array.from({ length: 20 }, (_, i) => i + 1),
      ),
    );
    await Promise.all([a.done, b.done]);
    for (const step of engine.steps) expect(step.reduce((n, it) => n + it.tokens.length, 0)).toBeLessThanOrEqual(8);
    const chunks = engine.steps.flatMap((s) => s.filter((it) => it.tokens.length > 1 || it.startPosition === 0));
    expect(chunks.some((it) => it.tokens.length < 20 && it.startPosition > 0)).toBe(true); // b's prompt was split
    expect(
      engine.steps.some(
        (s) => s.some((it) => it.tokens.length === 1 && it.sample) && s.some((it) => it.tokens.length > 1),
      ),
    ).toBe(true);
  });
});

describe('text', () => {
  it('a stop string ends the sequence at the token that completed it; tokens sampled meanwhile are dropped', async () => {
    const { engine, scheduler } = setup();
    engine.stepDelayMs = 1;
    const full = await scheduler.submit(params(undefined, 12)).done;
    const stop = full.text.slice(5, 7);
    const at = full.text.indexOf(stop);
    const r = await scheduler.submit(params(undefined, 12, [5, 6, 7], { stop: [stop] })).done;
    expect(r.finishReason).toBe('stop');
    expect(r.stop).toBe(stop);
    expect(r.text).toBe(full.text.slice(0, at));
    expect(r.tokens.map((t) => t.token)).toEqual(full.tokens.slice(0, at + stop.length).map((t) => t.token)); // one letter per token
  });

  it('token events arrive in order and add up to the final text', async () => {
    const { scheduler } = setup();
    const s = scheduler.submit(params('A', 20, [1, 2], { stop: ['zzz'] }));
    let text = '',
      tokens = 0;
    for await (const e of s.stream()) {
      text += e.text;
      if (e.type === 'token') tokens++;
    }
    const r = await s.done;
    expect(text).toBe(r.text);
    expect(tokens).toBe(r.tokens.length);
  });
});

describe('cancellation and drain', () => {
  it('cancelling a running sequence frees its KV blocks at once', async () => {
    const { engine, scheduler } = setup({ kvBlocks: 64, manual: true });
    const s = scheduler.submit(params(undefined, 200, [1, 2, 3]));
    for (let i = 0; i < 4; i++) await scheduler.step();
    expect(s.sampled).toHaveLength(4);
    expect(engine.kvUsage().freeBlocks).toBeLessThan(64);
    scheduler.cancel(s);
    expect(engine.kvUsage().freeBlocks).toBe(64);
    await expect(s.done).rejects.toBeInstanceOf(CancelledError);
    expect(await scheduler.step()).toBe(false);
    expect(scheduler.runningCount).toBe(0);
  });

  it('cancelling a waiting sequence removes it from its queue; an adapter it pinned can be evicted after', async () => {
    const { scheduler } = setup({ kvBlocks: 4, blockSize: 4 });
    const running = scheduler.submit(params(undefined, 12, [1, 2, 3, 4]));
    const waiting: Sequence = scheduler.submit(params('A', 12, [1, 2, 3, 4]));
    await running.admitted;
    expect(scheduler.waitingCount).toBe(1);
    scheduler.cancel(waiting);
    expect(scheduler.waitingCount).toBe(0);
    await running.done;
  });

  it('drain finishes every accepted sequence and refuses new ones', async () => {
    const { engine, scheduler } = setup({ kvBlocks: 8, blockSize: 4 });
    engine.stepDelayMs = 1;
    const seqs = Array.from({ length: 4 }, () => scheduler.submit(params('A', 12, [1, 2, 3, 4])));
    await seqs[0]!.admitted;
    const drained = scheduler.drain();
    expect(() => scheduler.submit(params(undefined))).toThrow(/shutting down/);
    await drained;
    for (const s of seqs) expect((await s.done).tokens).toHaveLength(12);
    scheduler.stop();
  });
});
