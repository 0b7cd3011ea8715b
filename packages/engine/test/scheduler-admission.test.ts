// Admission, preemption and finish decisions alone.
import { describe, expect, it } from 'vitest';
import {
  AdapterQueues,
  BlockAllocator,
  ScheduledSequence,
  chooseAdmissions,
  outstandingPrefill,
  secureDecodeBlocks,
  tokenFinish,
  watermarkBlocks,
} from '../src/index.js';
import { greedy } from './helpers/fake-step.js';

const seq = (adapter: string | undefined, promptLength: number, maxTokens = 4): ScheduledSequence =>
  new ScheduledSequence({
    adapter,
    prompt: Array.from({ length: promptLength }, (_, i) => i + 1),
    sampling: greedy(maxTokens),
  });
const open = { admissible: (): boolean => true };

function queued(...seqs: ScheduledSequence[]): AdapterQueues<ScheduledSequence> {
  const q = new AdapterQueues<ScheduledSequence>();
  for (const s of seqs) q.push(s);
  return q;
}

describe('chooseAdmissions', () => {
  it('admits by prompt blocks, round-robin, up to maxRunning', () => {
    const kv = new BlockAllocator(64, 4);
    const [a1, a2, b1] = [seq('A', 4), seq('A', 4), seq('B', 4)];
    const queues = queued(a1, a2, b1);
    expect(chooseAdmissions({ queues, running: [], kv, gate: open, maxRunning: 2, watermark: 0 })).toEqual([a1, b1]);
    expect(queues.size).toBe(1);
  });

  it('keeps the watermark free while sequences run, but not for the first one', () => {
    const kv = new BlockAllocator(4, 4);
    const big = seq(undefined, 16);
    expect(chooseAdmissions({ queues: queued(big), running: [], kv, gate: open, maxRunning: 8, watermark: 1 })).toEqual(
      [big],
    );
    const s = seq(undefined, 16);
    expect(
      chooseAdmissions({
        queues: queued(s),
        running: [seq(undefined, 1)],
        kv,
        gate: open,
        maxRunning: 8,
        watermark: 1,
      }),
    ).toEqual([]);
    expect(watermarkBlocks(400)).toBe(4);
    expect(watermarkBlocks(64)).toBe(0);
  });

  it('counts the blocks admitted prefills still need, and stops at a head that does not fit (no overtaking)', () => {
    const kv = new BlockAllocator(8, 4);
    const running = seq(undefined, 20); // admitted, nothing prefilled yet: 5 blocks outstanding
    running.state = 'running';
    expect(outstandingPrefill([running], kv)).toBe(5);
    const [big, small] = [seq('A', 16), seq('B', 4)];
    expect(
      chooseAdmissions({ queues: queued(big, small), running: [running], kv, gate: open, maxRunning: 8, watermark: 0 }),
    ).toEqual([]);
  });

  it('admits only adapters the gate admits (the base model always)', () => {
    const kv = new BlockAllocator(64, 4);
    const [a, b, base] = [seq('A', 1), seq('B', 1), seq(undefined, 1)];
    const got = chooseAdmissions({
      queues: queued(a, b, base),
      running: [],
      kv,
      gate: { admissible: (k) => k === 'B' },
      maxRunning: 8,
      watermark: 0,
    });
    expect(got).toEqual([b, base]);
  });
});

describe('secureDecodeBlocks', () => {
  function decoding(kv: BlockAllocator, positions: number): ScheduledSequence {
    const s = seq(undefined, 1, 100);
    kv.ensure(s.blocks, positions);
    s.computed = positions;
    s.sampled.push(1);
    return s;
  }

  it('gives every decode token its block, preempting the newest running sequence when the cache is out', () => {
    const kv = new BlockAllocator(4, 4);
    const [old, mid, young] = [decoding(kv, 4), decoding(kv, 4), decoding(kv, 4)]; // 3 full blocks, 1 free
    const running = [old, mid, young];
    const victims: ScheduledSequence[] = [];
    secureDecodeBlocks(running, kv, (v) => {
      victims.push(v);
      running.splice(running.indexOf(v), 1);
      kv.release(v.blocks);
    });
    expect(victims).toEqual([young]); // old took the free block; mid needed one: the newest went
    expect(old.blocks).toHaveLength(2);
    expect(mid.blocks).toHaveLength(2);
    expect(running).toEqual([old, mid]);
  });

  it('a sequence whose block is already there takes nothing', () => {
    const kv = new BlockAllocator(2, 4);
    const s = decoding(kv, 2);
    secureDecodeBlocks([s], kv, () => expect.unreachable());
    expect(s.blocks).toHaveLength(1);
    expect(kv.freeBlocks).toBe(1);
  });
});

describe('tokenFinish', () => {
  it('EOS, then stop token ids, then max tokens, then the context', () => {
    const s = new ScheduledSequence({
      adapter: undefined,
      prompt: [1, 2],
      sampling: { ...greedy(3), stopTokenIds: [5] },
    });
    const eos = new Set([0]);
    expect(tokenFinish(s, 0, eos, 100)).toBe('eos');
    expect(tokenFinish(s, 5, eos, 100)).toBe('stop');
    expect(tokenFinish(s, 7, eos, 100)).toBeUndefined();
    expect(tokenFinish(s, 7, eos, 3)).toBe('length'); // prompt 2 + 1 sampled reaches the context
    s.sampled.push(7, 7);
    expect(tokenFinish(s, 7, eos, 100)).toBe('length');
    const ignoring = new ScheduledSequence({
      adapter: undefined,
      prompt: [1],
      sampling: { ...greedy(3), ignoreEos: true },
    });
    expect(tokenFinish(ignoring, 0, eos, 100)).toBeUndefined();
  });
});
