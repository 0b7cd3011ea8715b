// One sequence's grammar state (an xgrammar GrammarMatcher): the allowed-token bitmask before each
// draw, the drawn token fed back after it, and whether the output is complete.
//
// A trap in this matcher's engine (isTrap) fails this sequence and retires the engine. When another
// sequence's trap retired it, this one moves to the fresh engine at its next mask: a new matcher of
// the same grammar replays the tokens accepted so far (xgrammar is deterministic, so it stands
// exactly where the old one stood).
import type { Utf8Table } from './utf8-filter.js';
import { isTrap, type XgGrammarMatcher } from './xgrammar.js';

/** A matcher and the engine (xgrammar instance) it lives in. */
export interface EngineMatcher {
  matcher: XgGrammarMatcher;
  engine: { retired: boolean };
}

/** What a constraint needs from the StructuredOutput that made it. */
export interface ConstraintHost {
  /** The same grammar on the current engine, having accepted `tokens`. */
  rebuild(tokens: readonly number[]): Promise<EngineMatcher>;
  /** Stops using an engine a call trapped in. */
  retire(engine: EngineMatcher['engine']): void;
}

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
  /** Tokens accepted so far (replayed when the sequence moves to a fresh engine). */
  private readonly tokens: number[] = [];
  private matcher: XgGrammarMatcher;
  private engine: EngineMatcher['engine'];

  constructor(start: EngineMatcher, private readonly words: number, private readonly utf8: Utf8Table, private readonly host: ConstraintHost) {
    this.matcher = start.matcher;
    this.engine = start.engine;
  }

  get accepted(): number {
    return this.tokens.length;
  }

  /** Runs a call into the matcher; a trap retires its engine and fails this sequence only. */
  private guarded<T>(call: () => T): T {
    try {
      return call();
    } catch (e) {
      if (isTrap(e)) this.host.retire(this.engine);
      throw e;
    }
  }

  async nextMask(): Promise<Uint32Array> {
    if (this.disposed) return new Uint32Array(this.words).fill(0xffffffff); // ended: its draw is dropped anyway
    const p = (async () => {
      if (this.engine.retired) ({ matcher: this.matcher, engine: this.engine } = await this.host.rebuild(this.tokens));
      return this.guarded(() => this.matcher.getNextTokenBitmask());
    })();
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
      if (this.disposed) this.free();
    }
  }

  accept(token: number): boolean {
    if (this.disposed) return true;
    // On a retired engine the token is only recorded: the next mask replays it on the new one.
    const ok = this.engine.retired ? true : this.guarded(() => this.matcher.acceptToken(token));
    if (ok) this.tokens.push(token);
    this.utf8State = this.utf8.after(this.utf8State, token);
    return ok;
  }

  get complete(): boolean {
    // Not known on a retired engine: the next mask (on the new one) then allows only the stop tokens.
    return !this.disposed && !this.engine.retired && this.guarded(() => this.matcher.isTerminated());
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (!this.pending) this.free(); // else freed once the mask in flight is done
  }

  /** Frees the matcher, unless its engine is retired (its memory may be corrupt: dropped with it). */
  private free(): void {
    if (!this.engine.retired) this.matcher.dispose();
  }
}
