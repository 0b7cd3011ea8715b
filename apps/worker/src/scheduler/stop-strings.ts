// Stop strings over a stream of text deltas. Text that could still be the start of a stop string is
// held back, so a client never sees the beginning of a stop string that then completes. Because
// every suffix that might begin a stop string is held, a stop string can only start inside the
// held-back text: searching the pending text is enough.

export interface StopResult {
  /** Text now safe to show. */
  text: string;
  /** The stop string that matched, when one did (the sequence ends there). */
  stop?: string;
}

export class StopMatcher {
  private pending = '';
  private done = false;

  /** includeStop: keep the matched stop string in the output (LoRAX/TGI do, OpenAI and vLLM do not). */
  constructor(
    private readonly stops: readonly string[],
    private readonly includeStop = false,
  ) {}

  get active(): boolean {
    return this.stops.length > 0;
  }

  push(delta: string): StopResult {
    if (this.done) return { text: '' };
    if (this.stops.length === 0) return { text: delta };
    this.pending += delta;
    let at = -1,
      which: string | undefined;
    for (const s of this.stops) {
      const i = this.pending.indexOf(s);
      if (i >= 0 && (at < 0 || i < at || (i === at && s.length > which!.length))) {
        at = i;
        which = s;
      }
    }
    if (which !== undefined) {
      this.done = true;
      const text = this.pending.slice(0, this.includeStop ? at + which.length : at);
      this.pending = '';
      return { text, stop: which };
    }
    const hold = this.heldSuffixLength();
    const text = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return { text };
  }

  /** The end of the sequence: nothing can complete a stop string any more. */
  flush(): string {
    const t = this.done ? '' : this.pending;
    this.pending = '';
    return t;
  }

  /** Length of the longest suffix of the pending text that is a proper prefix of a stop string. */
  private heldSuffixLength(): number {
    let best = 0;
    for (const s of this.stops) {
      const max = Math.min(s.length - 1, this.pending.length);
      for (let n = max; n > best; n--) {
        if (this.pending.endsWith(s.slice(0, n))) {
          best = n;
          break;
        }
      }
    }
    return best;
  }
}
