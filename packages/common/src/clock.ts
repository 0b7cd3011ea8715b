// Time as components read it, injectable so tests move it by hand instead of sleeping. A clock
// answers milliseconds; what its zero is depends on the clock, so compare only readings of one clock.

export interface Clock {
  /** Milliseconds: only differences between readings of the same clock mean anything. */
  now(): number;
}

/** Wall-clock time (Date.now()): for times that are stored, sent or compared with other hosts. */
export const systemClock: Clock = { now: () => Date.now() };

/** Monotonic time (performance.now()): for ages and intervals inside one process. */
export const monotonicClock: Clock = { now: () => performance.now() };

/** A clock that moves only when told: for tests. */
export class ManualClock implements Clock {
  private ms: number;

  constructor(startMs = 0) {
    if (!Number.isFinite(startMs)) throw new RangeError(`ManualClock: start ${startMs} is not a finite number`);
    this.ms = startMs;
  }

  now(): number {
    return this.ms;
  }

  /** Moves time forward by `ms` (never backward: a real clock does not) and returns the new time. */
  advance(ms: number): number {
    if (!(ms >= 0) || !Number.isFinite(ms))
      throw new RangeError(`ManualClock.advance: ${ms} is not a finite number >= 0`);
    this.ms += ms;
    return this.ms;
  }

  /** Sets the time; unlike advance() it may go backward (to test a wall clock being stepped). */
  set(ms: number): void {
    if (!Number.isFinite(ms)) throw new RangeError(`ManualClock.set: ${ms} is not a finite number`);
    this.ms = ms;
  }
}
