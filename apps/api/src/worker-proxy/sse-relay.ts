// Streams a worker's server-sent events through to the client without buffering the response:
// each complete event is forwarded as soon as it arrives (a partial one waits only for the rest of
// itself). On the way it reads the usage the router forced on and drops it again where the client
// did not ask for it. A worker that dies mid-stream ends the client's stream with one final error
// event (as OpenAI and vLLM send errors in-band) instead of a torn connection.
import { isObject, usageOfEvent, type Family, type TokenCounts } from './wire.js';

/** How a relayed stream ended. */
export interface RelayOutcome {
  /** 200 finished; the worker's in-band error status; 502 the worker failed; 499 the client left. */
  status: number;
  usage: TokenCounts | undefined;
  /** Content events seen (a lower bound on the tokens generated, when no usage arrived). */
  events: number;
}

const SEPARATOR = /\r?\n\r?\n/;

/** Reads one event and says what to forward: the event unchanged, a rewritten event, or nothing. */
export class SseUsageScanner {
  usage: TokenCounts | undefined;
  events = 0;
  errorStatus: number | undefined;

  constructor(
    private readonly family: Family,
    private readonly clientWantsUsage: boolean,
    private readonly restoreModel: (text: string) => string = (t) => t,
  ) {}

  /** The event text to send (without separator), or null to drop it. */
  process(event: string): string | null {
    const out = this.scan(event);
    return out === null ? null : this.restoreModel(out);
  }

  private scan(event: string): string | null {
    const data = dataOf(event);
    if (data === undefined || data === '[DONE]') return event;
    if (data.startsWith('{"error"')) {
      this.errorStatus = errorStatusOf(data);
      return event;
    }
    // Cheap filter first: only events that can carry usage are parsed. Inside a JSON string a quote
    // is always escaped, so generated text can never contain these exact byte sequences.
    const marker = this.family === 'openai' ? '"usage":{' : '"details":{';
    if (!data.includes(marker)) {
      this.events++;
      return event;
    }
    let obj: unknown;
    try {
      obj = JSON.parse(data);
    } catch {
      return event;
    }
    if (!isObject(obj)) return event;
    const u = usageOfEvent(this.family, obj);
    if (u) this.usage = u;
    if (this.family === 'openai') {
      const choices = Array.isArray(obj.choices) ? obj.choices : [];
      if (choices.length > 0) this.events++;
      if (this.clientWantsUsage) return event;
      if (choices.length === 0) return null; // the usage chunk the client did not ask for
      delete obj.usage;
      return `data: ${JSON.stringify(obj)}`;
    }
    this.events++;
    if (this.clientWantsUsage) return event;
    obj.details = null; // what the worker sends when details were not requested
    return `data: ${JSON.stringify(obj)}`;
  }
}

function dataOf(event: string): string | undefined {
  let data: string | undefined;
  for (const line of event.split(/\r?\n/)) {
    if (!line.startsWith('data:')) continue;
    const v = line.slice(line.startsWith('data: ') ? 6 : 5);
    data = data === undefined ? v : `${data}\n${v}`;
  }
  return data?.trim();
}

function errorStatusOf(data: string): number {
  try {
    const e = (JSON.parse(data) as { error?: unknown }).error;
    if (isObject(e) && typeof e.code === 'number' && e.code >= 400 && e.code < 600) return e.code;
  } catch {
    /* not JSON: still an error */
  }
  return 500;
}

/** The event the client gets when the worker fails mid-stream, in the route family's shape. */
export function workerFailedEvent(family: Family): string {
  const error = {
    message: 'the worker serving this request failed mid-stream; the response is incomplete',
    type: 'server_error',
    code: 'worker_failed',
  };
  // LoRAX clients (lorax-client) classify in-band errors by error_type; OpenAI clients read error.
  const body = family === 'lorax' ? { error, error_type: 'generation' } : { error };
  return `data: ${JSON.stringify(body)}\n\n${family === 'openai' ? 'data: [DONE]\n\n' : ''}`;
}

export interface RelayOptions {
  family: Family;
  clientWantsUsage: boolean;
  /** Rewrites the adapter id back to the client's model name (wire.ts). */
  restoreModel?: (text: string) => string;
  reader: ReadableStreamDefaultReader<Uint8Array>;
  /** Already read from the worker (the router reads one chunk before committing to a worker). */
  first: Uint8Array | undefined;
  /** True once the client went away (its request signal aborted). */
  clientGone: () => boolean;
  /** Aborts the request to the worker. */
  abortWorker: () => void;
  /** Called exactly once, when the stream ends in any way. */
  onEnd: (o: RelayOutcome) => void;
}

export function relaySse(o: RelayOptions): ReadableStream<Uint8Array> {
  const scanner = new SseUsageScanner(o.family, o.clientWantsUsage, o.restoreModel);
  const decoder = new TextDecoder();
  const encoder = new TextEncoder();
  let pending = '';
  let first = o.first;
  let ended = false;
  let cancelled = false;
  const end = (status: number): void => {
    if (ended) return;
    ended = true;
    o.onEnd({ status, usage: scanner.usage, events: scanner.events });
  };
  /** Complete events of `pending` (as they should go out), keeping an incomplete tail. */
  const drain = (): string => {
    const parts = pending.split(SEPARATOR);
    pending = parts.pop()!;
    let out = '';
    for (const ev of parts) {
      if (ev.trim() === '') continue;
      const send = scanner.process(ev);
      if (send !== null) out += `${send}\n\n`;
    }
    return out;
  };

  return new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      try {
        // Read until there is something to send, so a chunk holding only part of an event does not
        // cost the client an empty write.
        for (;;) {
          const r = first ? { done: false as const, value: first } : await o.reader.read();
          first = undefined;
          if (r.done) {
            pending += decoder.decode();
            let out = drain();
            if (pending.trim() !== '') {
              const send = scanner.process(pending);
              if (send !== null) out += `${send}\n\n`;
            }
            pending = '';
            if (out) ctrl.enqueue(encoder.encode(out));
            ctrl.close();
            end(scanner.errorStatus ?? 200);
            return;
          }
          pending += decoder.decode(r.value, { stream: true });
          const out = drain();
          if (out) {
            ctrl.enqueue(encoder.encode(out));
            return;
          }
        }
      } catch {
        if (cancelled) return; // the stream is gone; cancel() reported it
        if (o.clientGone()) {
          end(499);
          ctrl.close();
          return;
        }
        ctrl.enqueue(encoder.encode(workerFailedEvent(o.family)));
        ctrl.close();
        end(502);
      }
    },
    cancel() {
      // The client stopped reading (disconnect): stop the worker's work on the sequence.
      cancelled = true;
      o.abortWorker();
      end(499);
    },
  });
}
