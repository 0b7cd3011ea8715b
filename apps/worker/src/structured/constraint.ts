// One sequence's grammar state: a matcher in the grammar engine thread (engine-thread.ts), the
// allowed-token bitmask before each draw, the drawn tokens fed back, and whether the output is complete.
//
// Matching runs in the engine thread, so `accept` only records the token: it goes to the matcher
// with the next mask request, which accepts it first. A token the grammar rejects fails that mask
// (and so the sequence); completion is learnt from that mask too (after it, the mask allows only the
// stop tokens). When the engine thread is replaced (another request trapped or ran past a limit),
// this constraint moves to the fresh engine at its next request: a new matcher of the same grammar
// replays the tokens accepted so far (xgrammar is deterministic: it stands exactly where the old one
// stood), and the request is sent again.
import { EngineDiedError, type EngineThread } from './engine-client.js';

/** A matcher and the engine thread it lives in. */
export interface EngineMatcher {
  engine: EngineThread;
  matcherId: number;
}

/** What a constraint needs from the StructuredOutput that made it. */
export interface ConstraintHost {
  /** The same grammar on the current engine, having accepted `tokens`. */
  rebuild(tokens: readonly number[]): Promise<EngineMatcher>;
}

/** What the scheduler needs from a per-sequence constraint (JSON mode). */
export interface SequenceConstraint {
  /** Allowed-token bitmask for the next draw: ceil(vocab/32) words, bit t of word t>>5 = token t. */
  nextMask(): Promise<Uint32Array>;
  /** Records a drawn token (checked against the grammar with the next mask); false if known to be rejected. */
  accept(token: number): boolean;
  /** The grammar had reached its end at the last mask: the draw from it can only be a stop token. */
  readonly complete: boolean;
  /** Whether the grammar is complete after every token accepted so far (the last draw of a sequence). */
  settle?(): Promise<boolean>;
  /** Frees the matcher (the sequence ended). Safe to call twice and while a mask is computed. */
  dispose(): void;
}

/** How often a request goes again on a fresh engine after the engine died under it before it fails. */
const RETRIES = 2;

export class GrammarConstraint implements SequenceConstraint {
  private disposed = false;
  private busy = false;
  /** Tokens accepted so far (replayed when the sequence moves to a fresh engine). */
  private readonly tokens: number[] = [];
  /** How many of `tokens` the matcher has been sent. */
  private sent = 0;
  private at: EngineMatcher;
  complete = false;

  constructor(
    start: EngineMatcher,
    private readonly words: number,
    private readonly host: ConstraintHost,
  ) {
    this.at = start;
  }

  get accepted(): number {
    return this.tokens.length;
  }

  async nextMask(): Promise<Uint32Array> {
    if (this.disposed) return new Uint32Array(this.words).fill(0xffffffff); // ended: its draw is dropped anyway
    const r = await this.advance(true);
    return new Uint32Array(r.mask!);
  }

  async settle(): Promise<boolean> {
    if (this.disposed) return this.complete;
    await this.advance(false);
    return this.complete;
  }

  accept(token: number): boolean {
    if (!this.disposed) this.tokens.push(token);
    return true;
  }

  /** Sends the tokens not sent yet (and asks for a mask): on the current engine, moving there if need be. */
  private async advance(mask: boolean): Promise<{ mask?: ArrayBuffer }> {
    this.busy = true;
    try {
      for (let attempt = 0; ; attempt++) {
        if (this.at.engine.dead) {
          this.at = await this.host.rebuild(this.tokens);
          this.sent = this.tokens.length;
        }
        const accept = this.tokens.slice(this.sent);
        this.sent = this.tokens.length;
        try {
          const r = await this.at.engine.request({ op: 'advance', matcherId: this.at.matcherId, accept, mask });
          this.complete = r.terminated;
          return r;
        } catch (e) {
          if (!(e instanceof EngineDiedError) || attempt >= RETRIES) throw e;
        }
      }
    } finally {
      this.busy = false;
      if (this.disposed) this.free();
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (!this.busy) this.free(); // else freed once the request in flight is done
  }

  private free(): void {
    if (!this.at.engine.dead) this.at.engine.post({ op: 'disposeMatcher', target: this.at.matcherId });
  }
}
