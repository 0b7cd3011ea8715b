// ManualClock moves only when told, forward by advance() and anywhere by set(); the system clocks
// read Date.now() and performance.now().
import { describe, expect, it } from 'vitest';
import { ManualClock, monotonicClock, systemClock, type Clock } from '../src/clock.js';

describe('ManualClock', () => {
  it('starts where told (0 by default) and stands still until advanced', () => {
    expect(new ManualClock().now()).toBe(0);
    const c = new ManualClock(1_000);
    expect(c.now()).toBe(1_000);
    expect(c.now()).toBe(1_000);
    expect(c.advance(250)).toBe(1_250);
    expect(c.advance(0)).toBe(1_250);
    expect(c.now()).toBe(1_250);
  });

  it('set() may step backward; advance() refuses to', () => {
    const c = new ManualClock(500);
    c.set(100);
    expect(c.now()).toBe(100);
    expect(() => c.advance(-1)).toThrow(RangeError);
    expect(() => c.advance(Number.NaN)).toThrow(RangeError);
    expect(() => c.advance(Number.POSITIVE_INFINITY)).toThrow(RangeError);
    expect(() => c.set(Number.NaN)).toThrow(RangeError);
    expect(() => new ManualClock(Number.NaN)).toThrow(RangeError);
    expect(c.now()).toBe(100);
  });

  it('is a Clock, as are systemClock and monotonicClock', () => {
    const clocks: Clock[] = [new ManualClock(), systemClock, monotonicClock];
    for (const c of clocks) expect(typeof c.now()).toBe('number');
    const before = Date.now();
    const t = systemClock.now();
    expect(t).toBeGreaterThanOrEqual(before);
    expect(t).toBeLessThanOrEqual(Date.now());
    const m0 = monotonicClock.now();
    expect(monotonicClock.now()).toBeGreaterThanOrEqual(m0);
  });
});
