// One sequence's grammar state (an xgrammar GrammarMatcher): the allowed-token bitmask before each
// draw, the drawn token fed back after it, and whether the output is complete.
import type { Utf8Table } from './utf8-filter.js';
import type { XgGrammarMatcher } from './xgrammar.js';

/** What the scheduler needs from a per-sequence constraint (JSON mode). */
export interface SequenceConstraint {
  /** Allowed-token bitmask for the next draw: ceil(vocab/32) words, bit t of word t>>5 = token t. */
  nextMask(): Promise<Uint32Array>;
  /** Feeds a drawn token; false if the grammar rejects it (the mask forbade it). */
  accept(token: number): boolean;
  /** The grammar reached its end: nothing may follow (the sequence finishes with 'stop'). */
  readonly complete: boolean;
  /** Frees the matcher (the sequence ended). Safe to call twice and while a mask is computed. */
  dispose(): void;
}

export class GrammarConstraint implements SequenceConstraint {
  private disposed = false;
  private pending: Promise<unknown> | undefined;
  /** Where the output stands within a UTF-8 character (see utf8-filter.ts). */
  private utf8State = 0;
  /** Tokens accepted so far. */
  accepted = 0;

  constructor(private readonly matcher: XgGrammarMatcher, private readonly words: number, private readonly utf8: Utf8Table) {}

  async nextMask(): Promise<Uint32Array> {
    if (this.disposed) return new Uint32Array(this.words).fill(0xffffffff); // ended: its draw is dropped anyway
    const p = this.matcher.getNextTokenBitmask();
    this.pending = p;
    try {
      const m = await p;
      const mask = new Uint32Array(m.buffer, m.byteOffset, m.length);
      this.utf8.restrict(mask, this.utf8State); // if nothing valid were left, xgrammar's mask stands
      // An empty mask would fail the whole step in the sampler; fail this sequence alone instead.
      if (mask.every((w) => w === 0)) throw new Error('the grammar allows no token of this vocabulary here');
      return mask;
    } finally {
      this.pending = undefined;
      if (this.disposed) this.matcher.dispose();
    }
  }

  accept(token: number): boolean {
    if (this.disposed) return true;
    const ok = this.matcher.acceptToken(token);
    if (ok) this.accepted++;
    this.utf8State = this.utf8.after(this.utf8State, token);
    return ok;
  }

  get complete(): boolean {
    return !this.disposed && this.matcher.isTerminated();
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (!this.pending) this.matcher.dispose(); // else freed once the mask in flight is done
  }
}
