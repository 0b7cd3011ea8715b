// Server-sent events: `data: <payload>\n\n` per event, pulled from an async generator so that a slow
// client applies back-pressure; a closed connection cancels the generator and the sequences.
import type { Sequence, SequenceEvent } from '../scheduler/sequence.js';

export function sseResponse(
  events: AsyncGenerator<string>,
  onCancel: () => void,
  headers: Record<string, string> = {},
): Response {
  const enc = new TextEncoder();
  const stream = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      try {
        const r = await events.next();
        if (r.done) ctrl.close();
        else ctrl.enqueue(enc.encode(`data: ${r.value}\n\n`));
      } catch (e) {
        ctrl.error(e);
      }
    },
    cancel() {
      onCancel();
      void events.return(undefined);
    },
  });
  return new Response(stream, {
    status: 200,
    headers: {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no',
      ...headers,
    },
  });
}

/** Events of several sequences interleaved as they come, each tagged with its sequence's index. */
export async function* mergeSequences(
  seqs: readonly Sequence[],
): AsyncGenerator<{ index: number; event: SequenceEvent }> {
  const iters = seqs.map((s) => s.stream());
  type Next = { i: number; r?: IteratorResult<SequenceEvent>; err?: unknown };
  // Never rejects: an error is delivered as a value, so no race loser is left unhandled.
  const next = (i: number): Promise<Next> =>
    iters[i]!.next().then(
      (r) => ({ i, r }),
      (err: unknown) => ({ i, err: err ?? new Error('sequence failed') }),
    );
  const pending = new Map<number, Promise<Next>>(iters.map((_, i) => [i, next(i)]));
  try {
    while (pending.size > 0) {
      const { i, r, err } = await Promise.race(pending.values());
      if (err !== undefined) throw err;
      if (!r || r.done) {
        pending.delete(i);
        continue;
      }
      pending.set(i, next(i));
      yield { index: i, event: r.value };
    }
  } finally {
    for (const it of iters) void it.return(undefined);
  }
}
