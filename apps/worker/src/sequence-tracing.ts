// Spans of a sequence's life in the scheduler, from the scheduler's and the adapter manager's
// hooks (the scheduler itself knows nothing of tracing): under the request's span, one `sequence`
// span per sequence with, in turn, `queue` (submitted -> admitted; an `adapter.load` span inside it
// when its adapter had to be loaded into a slot), `prefill` (admitted -> first token) and `decode`
// (first token -> finished). A sequence submitted outside a traced request gets no span.
// Installed only when tracing is on.
import { context, trace, type Context } from '@opentelemetry/api';
import type { AdapterHooks } from './adapters/adapter-manager.js';
import type { SchedulerHooks } from './scheduler/scheduler.js';
import type { Sequence } from './scheduler/sequence.js';
import { spanError, startSpan, type Span } from '@loraplex/telemetry';

interface SequenceSpans {
  ctx: Context;
  sequence: Span;
  queue?: Span | undefined;
  prefill?: Span | undefined;
  decode?: Span | undefined;
}

/** Epoch milliseconds of a performance.now() reading (span times are wall-clock). */
const epochMs = (perfNow: number): number => performance.timeOrigin + perfNow;

export class SequenceTracing {
  private readonly spans = new WeakMap<Sequence, SequenceSpans>();
  /** Traced sequences waiting for each adapter (for adapter.load spans). */
  private readonly waiting = new Map<string, Set<Sequence>>();

  private child(st: SequenceSpans, name: string): Span | undefined {
    return startSpan(name, {}, st.ctx);
  }

  private unwait(s: Sequence): void {
    const a = s.params.adapter;
    if (a === undefined) return;
    const set = this.waiting.get(a);
    set?.delete(s);
    if (set?.size === 0) this.waiting.delete(a);
  }

  private end(s: Sequence, err?: unknown): void {
    const st = this.spans.get(s);
    if (!st) return;
    this.spans.delete(s);
    this.unwait(s);
    for (const span of [st.queue, st.prefill, st.decode, st.sequence]) {
      if (!span) continue;
      if (err !== undefined) spanError(span, err);
      span.end();
    }
  }

  schedulerHooks(): SchedulerHooks {
    return {
      // Called synchronously from the route's submit(): the active context is the request's.
      submitted: (s) => {
        const sequence = startSpan('sequence', {
          attributes: {
            'loraplex.adapter': s.params.adapter ?? '',
            'loraplex.route': s.params.route,
            'gen_ai.usage.input_tokens': s.params.prompt.length,
            'gen_ai.request.max_tokens': s.params.sampling.maxTokens,
          },
        });
        if (!sequence) return;
        const st: SequenceSpans = { ctx: trace.setSpan(context.active(), sequence), sequence };
        st.queue = this.child(st, 'queue');
        this.spans.set(s, st);
        const a = s.params.adapter;
        if (a !== undefined) {
          let set = this.waiting.get(a);
          if (!set) this.waiting.set(a, (set = new Set()));
          set.add(s);
        }
      },
      admitted: (s) => {
        const st = this.spans.get(s);
        if (!st) return;
        this.unwait(s);
        st.queue?.end();
        st.queue = undefined;
        st.prefill = this.child(st, 'prefill');
      },
      preempted: (s) => this.spans.get(s)?.sequence.addEvent('preempted'),
      token: (s) => {
        const st = this.spans.get(s);
        if (!st?.prefill) return;
        st.prefill.end();
        st.prefill = undefined;
        st.decode = this.child(st, 'decode');
      },
      finished: (s, reason) => {
        const st = this.spans.get(s);
        st?.sequence.setAttributes({
          'gen_ai.response.finish_reasons': [reason],
          'gen_ai.usage.output_tokens': s.output.length,
        });
        this.end(s);
      },
      failed: (s, err) => this.end(s, err),
      cancelled: (s) => this.end(s, new Error('cancelled: the client went away')),
    };
  }

  /** adapter.load spans in the queue span of every traced sequence that waited for the load. */
  adapterHooks(): AdapterHooks {
    return {
      loaded: (name, seconds) => {
        const now = performance.now();
        for (const s of this.waiting.get(name) ?? []) {
          const st = this.spans.get(s);
          if (!st?.queue) continue;
          const parent = trace.setSpan(st.ctx, st.queue);
          const startTime = epochMs(now - seconds * 1000);
          const span = startSpan('adapter.load', { startTime, attributes: { 'loraplex.adapter': name } }, parent);
          span?.end(epochMs(now));
        }
      },
      loadFailed: (name, err) => {
        for (const s of this.waiting.get(name) ?? []) {
          this.spans.get(s)?.queue?.addEvent('adapter.load failed', { 'exception.message': err.message });
        }
      },
    };
  }
}
