// Time as the scheduler sees it: injectable, so tests measure steps without sleeping.
export interface Clock {
  /** Milliseconds from an arbitrary origin (monotonic). */
  now(): number;
}

export const realClock: Clock = { now: () => performance.now() };
