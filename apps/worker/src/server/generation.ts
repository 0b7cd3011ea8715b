// Glue between routes and the scheduler: submit a request's sequences (all validated first, so a
// 400 never leaves a sequence behind), cancel them all when the client goes away, and decode single
// tokens for logprobs and LoRAX token details.
import type { Context } from 'hono';
import type { Sequence, SequenceParams } from '../scheduler/sequence.js';
import type { WorkerContext } from '../worker-context.js';
import { onDisconnect } from './middleware.js';

export function submitAll(ctx: WorkerContext, c: Context, params: SequenceParams[]): Sequence[] {
  const seqs: Sequence[] = [];
  try {
    for (const p of params) seqs.push(ctx.scheduler.submit(p));
  } catch (e) {
    for (const s of seqs) ctx.scheduler.cancel(s);
    throw e;
  }
  onDisconnect(c, () => {
    for (const s of seqs) ctx.scheduler.cancel(s);
  });
  return seqs;
}

export function cancelAll(ctx: WorkerContext, seqs: readonly Sequence[]): void {
  for (const s of seqs) ctx.scheduler.cancel(s);
}

/** Waits until every sequence is admitted (so adapter-load failures become HTTP errors before a stream starts). */
export async function admittedAll(seqs: readonly Sequence[]): Promise<void> {
  await Promise.all(seqs.map((s) => s.admitted));
}

/** Text of one token on its own (special tokens included), cached per worker. */
export class TokenTexts {
  private readonly cache = new Map<number, string>();
  private readonly specialCache = new Map<number, boolean>();
  constructor(private readonly ctx: WorkerContext) {}

  async text(id: number): Promise<string> {
    let t = this.cache.get(id);
    if (t === undefined) {
      t = await this.ctx.engine.tokenizer!.decode([id], false);
      if (this.cache.size < 200_000) this.cache.set(id, t);
    }
    return t;
  }

  /** A special token: one that decoding with skip-special-tokens drops. */
  async special(id: number): Promise<boolean> {
    let s = this.specialCache.get(id);
    if (s === undefined) {
      const [raw, skipped] = await Promise.all([this.text(id), this.ctx.engine.tokenizer!.decode([id], true)]);
      s = skipped === '' && raw !== '';
      this.specialCache.set(id, s);
    }
    return s;
  }
}

let counter = 0;
export function requestId(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}${(counter++).toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}
