// Worker choice: rendezvous order is stable, spreads keys evenly, moves few keys when the worker set
// changes; residency and load reorder only the top two; base requests go to the least loaded.
import { describe, expect, it } from 'vitest';
import { leastLoaded, pickWorkers, preferResident } from '../src/worker-proxy/rendezvous.js';

const worker = (id: string, resident: string[] = [], running = 0) => ({
  id,
  residentAdapters: resident,
  load: { running, waiting: 0 },
});
const fleet = (n: number) => Array.from({ length: n }, (_, i) => worker(`wk_${i}`));
const keys = Array.from({ length: 4000 }, (_, i) => `ad_${i.toString(16).padStart(16, '0')}`);

describe('pickWorkers', () => {
  it('gives every key the same order whatever the input order', () => {
    const ws = fleet(6);
    for (const k of keys.slice(0, 200)) {
      const a = pickWorkers(ws, k).map((w) => w.id);
      const b = pickWorkers([...ws].reverse(), k).map((w) => w.id);
      expect(b).toEqual(a);
      expect(new Set(a).size).toBe(6);
    }
  });

  it('spreads keys evenly over workers', () => {
    const ws = fleet(8);
    const counts = new Map<string, number>();
    for (const k of keys) {
      const top = pickWorkers(ws, k)[0]!.id;
      counts.set(top, (counts.get(top) ?? 0) + 1);
    }
    expect(counts.size).toBe(8);
    // 500 expected per worker; a binomial spread stays well within ±25 %.
    for (const n of counts.values()) expect(Math.abs(n - 500)).toBeLessThan(125);
  });

  it("moves only the removed worker's keys when a worker leaves, and keeps the rest of every order", () => {
    const ws = fleet(5);
    const without = ws.filter((w) => w.id !== 'wk_2');
    let moved = 0;
    for (const k of keys) {
      const before = pickWorkers(ws, k).map((w) => w.id);
      const after = pickWorkers(without, k).map((w) => w.id);
      expect(after).toEqual(before.filter((id) => id !== 'wk_2'));
      if (before[0] === 'wk_2') moved++;
    }
    expect(moved).toBeGreaterThan(keys.length / 5 - 150);
    expect(moved).toBeLessThan(keys.length / 5 + 150);
  });

  it('a new worker takes about 1/n of the keys and nothing moves between old workers', () => {
    const ws = fleet(4);
    const more = [...ws, worker('wk_new')];
    let taken = 0;
    for (const k of keys) {
      const before = pickWorkers(ws, k)[0]!.id;
      const after = pickWorkers(more, k)[0]!.id;
      if (after === 'wk_new') taken++;
      else expect(after).toBe(before);
    }
    expect(Math.abs(taken - keys.length / 5)).toBeLessThan(150);
  });
});

describe('preferResident', () => {
  it('puts the second choice first when only it holds the adapter, and keeps the fallbacks', () => {
    const ws = fleet(4);
    const key = keys[7]!;
    const order = pickWorkers(ws, key);
    const second = { ...order[1]!, residentAdapters: [key] };
    const withResident = pickWorkers(
      ws.map((w) => (w.id === second.id ? second : w)),
      key,
    );
    const out = preferResident(withResident, key);
    expect(out.map((w) => w.id)).toEqual([order[1]!.id, order[0]!.id, order[2]!.id, order[3]!.id]);
  });

  it('never promotes a worker beyond the top two, even if it holds the adapter', () => {
    const key = keys[3]!;
    const order = pickWorkers(fleet(4), key).map((w, i) => (i === 2 ? { ...w, residentAdapters: [key] } : w));
    expect(preferResident(order, key).map((w) => w.id)).toEqual(order.map((w) => w.id));
  });

  it('sends traffic to the other top choice when the first is much busier', () => {
    const key = keys[11]!;
    const order = pickWorkers(fleet(3), key).map((w) => ({ ...w, residentAdapters: [key] }));
    const busy = new Map([[order[0]!.id, 3]]);
    expect(preferResident(order, key, { inFlight: (id) => busy.get(id) ?? 0 })[0]!.id).toBe(order[1]!.id);
    // A cold second choice must be coldPenalty + spillMargin requests less busy to win over a resident first one.
    const cold = order.map((w, i) => (i === 1 ? { ...w, residentAdapters: [] } : w));
    expect(preferResident(cold, key, { inFlight: (id) => busy.get(id) ?? 0 })[0]!.id).toBe(order[0]!.id);
    busy.set(order[0]!.id, 6);
    expect(preferResident(cold, key, { inFlight: (id) => busy.get(id) ?? 0 })[0]!.id).toBe(order[0]!.id);
    busy.set(order[0]!.id, 7);
    expect(preferResident(cold, key, { inFlight: (id) => busy.get(id) ?? 0 })[0]!.id).toBe(order[1]!.id);
  });
});

describe('preferResident with engine slots apart from the host tier', () => {
  const key = keys[5]!;
  const two = (first: { slot?: string[]; resident?: string[] }, second: { slot?: string[]; resident?: string[] }) =>
    pickWorkers(fleet(2), key).map((w, i) => {
      const r = i === 0 ? first : second;
      return { ...w, slotAdapters: r.slot ?? [], residentAdapters: r.resident ?? r.slot ?? [] };
    });
  const firstId = (order: ReturnType<typeof two>, busy: Record<number, number> = {}, opts = {}) => {
    const inFlight = (id: string) => busy[order.findIndex((w) => w.id === id)] ?? 0;
    return order.indexOf(preferResident(order, key, { inFlight, ...opts })[0]!);
  };

  it('prefers a slot over the host tier, the host tier over cold, then the rendezvous order', () => {
    expect(firstId(two({ resident: [key] }, { slot: [key] }))).toBe(1);
    expect(firstId(two({ slot: [key] }, { resident: [key] }))).toBe(0);
    expect(firstId(two({}, { resident: [key] }))).toBe(1);
    expect(firstId(two({}, {}))).toBe(0);
    expect(firstId(two({ resident: [key] }, { resident: [key] }))).toBe(0);
    expect(firstId(two({ slot: [key] }, { slot: [key] }))).toBe(0);
  });

  it('spills to the other worker only when the preferred one is clearly busier', () => {
    // Slot (cost 0) against host tier (slotLoadPenalty 4 + spillMargin 2).
    expect(firstId(two({ slot: [key] }, { resident: [key] }), { 0: 6 })).toBe(0);
    expect(firstId(two({ slot: [key] }, { resident: [key] }), { 0: 7 })).toBe(1);
    // Same class: the rendezvous-first keeps it until spillMargin (2) more requests are in flight there.
    expect(firstId(two({ slot: [key] }, { slot: [key] }), { 0: 2 })).toBe(0);
    expect(firstId(two({ slot: [key] }, { slot: [key] }), { 0: 3 })).toBe(1);
    expect(firstId(two({}, {}), { 0: 3 })).toBe(1);
    // A slot on the second choice wins against a busy-ish first choice that would have to load it.
    expect(firstId(two({ resident: [key] }, { slot: [key] }), { 1: 1 })).toBe(1);
  });

  it('counts an adapter this instance sent since the last heartbeat as in a slot there', () => {
    const order = two({ resident: [key] }, { resident: [key] });
    const sentToSecond = (id: string) => id === order[1]!.id;
    expect(order.indexOf(preferResident(order, key, { sentSinceHeartbeat: sentToSecond })[0]!)).toBe(1);
  });

  it('spreads adapters over the fleet: with every adapter everywhere in slots, each worker is first for about 1/n', () => {
    const ws = fleet(4).map((w) => ({ ...w, slotAdapters: keys.slice(0, 400), residentAdapters: keys.slice(0, 400) }));
    const first = new Map<string, number>();
    for (const k of keys.slice(0, 400)) {
      const id = preferResident(pickWorkers(ws, k), k)[0]!.id;
      first.set(id, (first.get(id) ?? 0) + 1);
    }
    expect(first.size).toBe(4);
    for (const n of first.values()) expect(Math.abs(n - 100)).toBeLessThan(40);
  });
});

describe('leastLoaded', () => {
  it('orders by requests in flight, then reported load', () => {
    const ws = [worker('a', [], 5), worker('b', [], 0), worker('c', [], 1)];
    expect(leastLoaded(ws).map((w) => w.id)).toEqual(['b', 'c', 'a']);
    const inFlight = new Map([
      ['b', 2],
      ['c', 1],
    ]);
    expect(leastLoaded(ws, (id) => inFlight.get(id) ?? 0).map((w) => w.id)).toEqual(['a', 'c', 'b']);
  });

  it('breaks ties at random', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) seen.add(leastLoaded(fleet(3))[0]!.id);
    expect(seen.size).toBe(3);
  });
});
