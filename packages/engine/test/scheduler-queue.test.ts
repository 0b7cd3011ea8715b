// The waiting queues alone: round-robin across adapters, FIFO within one, preempted sequences first.
import { describe, expect, it } from 'vitest';
import { AdapterQueues, BASE_KEY } from '../src/index.js';

interface Q {
  adapter: string | undefined;
  n: number;
}
const q = (adapter: string | undefined, n: number): Q => ({ adapter, n });
const all = (): boolean => true;

function drain(queues: AdapterQueues<Q>, eligible: (k: string) => boolean = all): number[] {
  const out: number[] = [];
  for (let next = queues.next(eligible); next; next = queues.next(eligible)) out.push(queues.take(next.key).n);
  return out;
}

describe('AdapterQueues', () => {
  it('takes one sequence per adapter per turn, in queue creation order, FIFO within an adapter', () => {
    const queues = new AdapterQueues<Q>();
    for (let i = 0; i < 4; i++) queues.push(q('A', i));
    queues.push(q('B', 10));
    queues.push(q(undefined, 20));
    queues.push(q('B', 11));
    expect(queues.size).toBe(7);
    expect(queues.waiting('A')).toBe(4);
    expect(queues.waiting(BASE_KEY)).toBe(1);
    expect(drain(queues)).toEqual([0, 10, 20, 1, 11, 2, 3]);
    expect(queues.size).toBe(0);
  });

  it('skips ineligible queues without losing their turn order, and the cursor stays on a head not taken', () => {
    const queues = new AdapterQueues<Q>();
    queues.push(q('A', 0));
    queues.push(q('B', 1));
    queues.push(q('A', 2));
    expect(queues.next((k) => k !== 'A')?.head.n).toBe(1);
    // Not taken: asking again returns the same head.
    expect(queues.next(all)?.head.n).toBe(0);
    expect(queues.next(all)?.head.n).toBe(0);
    expect(queues.adaptersWaiting()).toEqual(['A', 'B']);
    expect(queues.next(() => false)).toBeUndefined();
  });

  it('a preempted sequence goes to the front of its queue and is the next taken', () => {
    const queues = new AdapterQueues<Q>();
    queues.push(q('A', 0));
    queues.push(q('B', 1));
    queues.push(q('C', 2));
    expect(queues.take(queues.next(all)!.key).n).toBe(0); // cursor now at B
    queues.pushFront(q('C', 9));
    expect(drain(queues)).toEqual([9, 1, 2]);
  });

  it('remove and takeAll drop empty queues and keep the rotation', () => {
    const queues = new AdapterQueues<Q>();
    const a = q('A', 0);
    queues.push(a);
    queues.push(q('B', 1));
    queues.push(q('B', 2));
    queues.push(q('C', 3));
    expect(queues.remove(a)).toBe(true);
    expect(queues.remove(a)).toBe(false);
    expect(queues.takeAll('B').map((s) => s.n)).toEqual([1, 2]);
    expect(queues.adaptersWaiting()).toEqual(['C']);
    expect(queues.size).toBe(1);
    expect(drain(queues)).toEqual([3]);
  });
});
