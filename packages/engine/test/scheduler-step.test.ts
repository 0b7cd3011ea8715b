// The scheduler driven by hand (manual mode, step()) over a fake step function and a manual clock:
// no sleeps. Admission by prompt blocks, preemption by recompute that keeps the tokens, retire,
// cancel, the adapter gate's pins and the clock's step times.
import { describe, expect, it } from 'vitest';
import { Scheduler, ScheduledSequence, type AdapterGate, type Batch, type SchedulerHooks } from '../src/index.js';
import { fakeStep, greedy, ManualClock } from './helpers/fake-step.js';

function scheduler(opts: {
  numBlocks: number;
  blockSize?: number;
  maxBatchTokens?: number;
  maxRunning?: number;
  gate?: AdapterGate;
  hooks?: SchedulerHooks;
  clock?: ManualClock;
  delayMs?: number;
}) {
  const fake = fakeStep();
  const clock = opts.clock ?? new ManualClock();
  const sched = new Scheduler({
    runStep: async (items) => {
      clock.advance(opts.delayMs ?? 0);
      return fake.runStep(items);
    },
    numBlocks: opts.numBlocks,
    blockSize: opts.blockSize ?? 4,
    vocab: 64,
    maxPositions: 256,
    eos: new Set([0]),
    maxBatchTokens: opts.maxBatchTokens ?? 64,
    manual: true,
    clock,
    ...(opts.maxRunning !== undefined ? { maxRunning: opts.maxRunning } : {}),
    ...(opts.gate ? { gate: opts.gate } : {}),
    ...(opts.hooks ? { hooks: opts.hooks } : {}),
  });
  return { sched, steps: fake.steps, clock };
}

const seq = (maxTokens: number, prompt = [1, 2, 3, 4], adapter?: string): ScheduledSequence =>
  new ScheduledSequence({ adapter, prompt, sampling: greedy(maxTokens) });

async function toIdle(sched: Scheduler): Promise<number> {
  let n = 0;
  while (await sched.step()) if (++n > 10_000) throw new Error('not idle');
  return n;
}

describe('Scheduler.step', () => {
  it('runs nothing until step() is called, then one engine step per call', async () => {
    const { sched, steps } = scheduler({ numBlocks: 16 });
    const s = sched.submit(seq(3));
    expect(steps).toHaveLength(0);
    expect(sched.waitingCount).toBe(1);
    expect(await sched.step()).toBe(true); // prefill, samples the first token
    expect(steps).toHaveLength(1);
    expect(s.state).toBe('running');
    expect(s.sampled).toHaveLength(1);
    await sched.step();
    await sched.step();
    expect(s.sampled).toHaveLength(3);
    expect(s.generating).toBe(false); // 'length': retired by the step that finished it
    expect(sched.runningCount).toBe(0);
    expect(sched.kvUsage()).toEqual({ freeBlocks: 16, totalBlocks: 16, blockSize: 4 });
    expect(await sched.step()).toBe(false);
  });

  it('preempts by recompute when the cache runs out; every sequence equals a run alone, and every block comes back', async () => {
    const alone = scheduler({ numBlocks: 8 });
    const ref = alone.sched.submit(seq(12));
    await toIdle(alone.sched);
    const preempted: number[] = [];
    const { sched, steps } = scheduler({ numBlocks: 8, hooks: { preempted: (s) => preempted.push(s.id) } });
    const seqs = Array.from({ length: 6 }, () => sched.submit(seq(12))); // 16 tokens = 4 blocks each
    await toIdle(sched);
    expect(sched.preemptions).toBeGreaterThan(0);
    expect(preempted).not.toContain(seqs[0]!.id); // the oldest never loses its blocks
    for (const s of seqs) expect(s.sampled).toEqual(ref.sampled);
    for (const st of steps) {
      const used = st.tables.flat();
      expect(new Set(used).size).toBe(used.length);
      expect(used.length).toBeLessThanOrEqual(8);
    }
    expect(Math.max(...steps.map((st) => st.items.length))).toBeGreaterThan(2); // admitted by prompt blocks
    expect(sched.kvUsage().freeBlocks).toBe(8);
  });

  it('a cancelled running sequence frees its blocks at once; a cancelled waiting one leaves its queue', async () => {
    const { sched } = scheduler({ numBlocks: 4, maxRunning: 1 });
    const running = sched.submit(seq(12));
    const waiting = sched.submit(seq(12));
    await sched.step();
    expect(sched.kvUsage().freeBlocks).toBeLessThan(4);
    sched.cancel(running, new Error('gone'));
    expect(sched.kvUsage().freeBlocks).toBe(4);
    expect(sched.runningCount).toBe(0);
    sched.cancel(waiting, new Error('gone'));
    expect(sched.waitingCount).toBe(0);
    expect(await sched.step()).toBe(false);
  });

  it('refuses a sequence longer than the whole cache at submit', () => {
    const { sched } = scheduler({ numBlocks: 4 });
    expect(() => sched.submit(seq(20, [1, 2, 3]))).toThrow(/KV blocks/);
  });

  it('pins an adapter for every admitted sequence and unpins it on retire; never admits what the gate refuses', async () => {
    const pins = new Map<string, number>();
    const resident = new Set(['A']);
    const wanted = new Set<string>();
    const gate: AdapterGate = {
      admissible: (a) => resident.has(a),
      pin: (a) => (pins.set(a, (pins.get(a) ?? 0) + 1), a === 'A' ? 0 : 1),
      unpin: (a) => void pins.set(a, pins.get(a)! - 1),
      wanted: (names) => names.forEach((n) => wanted.add(n)),
    };
    const { sched, steps } = scheduler({ numBlocks: 64, gate });
    const a = sched.submit(seq(2, [1], 'A'));
    const b = sched.submit(seq(2, [1], 'B'));
    await sched.step();
    // B is not resident: it is asked for, and only A runs.
    expect(steps[0]!.items.map((it) => it.adapterSlot)).toEqual([0]);
    expect(wanted.has('B')).toBe(true);
    expect(pins.get('A')).toBe(1);
    resident.add('B'); // its load finished
    await toIdle(sched);
    expect(a.sampled).toHaveLength(2);
    expect(b.sampled).toHaveLength(2);
    expect([...pins.values()]).toEqual([0, 0]);
  });

  it('times each step on the injected clock', async () => {
    const times: number[] = [];
    const batches: Batch[] = [];
    const { sched } = scheduler({
      numBlocks: 16,
      delayMs: 250,
      hooks: { step: (sec, b) => (times.push(sec), batches.push(b)) },
    });
    const s = sched.submit(seq(2));
    expect(s.enqueuedAt).toBe(0);
    await toIdle(sched);
    expect(times).toEqual([0.25, 0.25]);
    expect(batches.map((b) => [b.prefillTokens, b.decodeTokens])).toEqual([
      [4, 0],
      [0, 1],
    ]);
  });

  it('an owner whose processing lags is awaited before the next step is absorbed; drain waits for it', async () => {
    const order: string[] = [];
    class Lagging extends ScheduledSequence {
      override accept(tok: { token: number }, finish: 'eos' | 'stop' | 'length' | undefined) {
        super.accept(tok, finish);
        order.push(`accept ${this.sampled.length}`);
        return Promise.resolve().then(() => {
          order.push(`processed ${this.sampled.length}`);
          return finish ?? null;
        });
      }
    }
    const { sched } = scheduler({ numBlocks: 16 });
    const s = sched.submit(new Lagging({ adapter: undefined, prompt: [1, 2], sampling: greedy(2) }));
    const drained = sched.drain();
    expect(() => sched.submit(seq(1))).toThrow(/draining/);
    await toIdle(sched);
    await drained;
    expect(order).toEqual(['accept 1', 'processed 1', 'accept 2', 'processed 2']);
    expect(s.state).toBe('finished');
  });

  it('a failed engine step fails the sequences in it and frees their blocks', async () => {
    const { sched } = scheduler({ numBlocks: 8 });
    const failures: unknown[] = [];
    class Failing extends ScheduledSequence {
      override fail(err: unknown): void {
        failures.push(err);
        super.fail(err);
      }
    }
    const boom = new Scheduler({
      runStep: () => Promise.reject(new Error('boom')),
      numBlocks: 8,
      blockSize: 4,
      vocab: 64,
      maxPositions: 256,
      eos: new Set([0]),
      maxBatchTokens: 64,
      manual: true,
    });
    const s = boom.submit(new Failing({ adapter: undefined, prompt: [1, 2], sampling: greedy(2) }));
    await toIdle(boom);
    expect(failures.map((e) => (e as Error).message)).toEqual(['boom']);
    expect(s.isEnded).toBe(true);
    expect(boom.kvUsage().freeBlocks).toBe(8);
    expect(sched.kvUsage().freeBlocks).toBe(8);
  });
});
