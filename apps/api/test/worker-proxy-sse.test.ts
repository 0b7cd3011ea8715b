// The SSE relay as a parser: events split at any byte (inside multi-byte characters too), CRLF
// separators, text that mentions "usage" or "details", forced usage removed, a broken stream.
import { describe, expect, it } from 'vitest';
import { relaySse, type RelayOutcome } from '../src/worker-proxy/sse-relay.js';
import { prepareRequest } from '../src/worker-proxy/wire.js';

const enc = new TextEncoder();

function source(bytes: Uint8Array, cut: number[], fail = false): ReadableStreamDefaultReader<Uint8Array> {
  const pieces: Uint8Array[] = [];
  let at = 0;
  for (const c of [...cut, bytes.length]) {
    pieces.push(bytes.slice(at, c));
    at = c;
  }
  return new ReadableStream<Uint8Array>({
    pull(ctrl) {
      const p = pieces.shift();
      if (p) ctrl.enqueue(p);
      else if (fail) ctrl.error(new Error('socket hang up'));
      else ctrl.close();
    },
  }).getReader();
}

async function relay(
  family: 'openai' | 'lorax',
  wants: boolean,
  text: string,
  cut: number[],
  fail = false,
): Promise<{ out: string; outcome: RelayOutcome }> {
  let outcome: RelayOutcome | undefined;
  const s = relaySse({
    family,
    clientWantsUsage: wants,
    reader: source(enc.encode(text), cut, fail),
    first: undefined,
    clientGone: () => false,
    abortWorker: () => undefined,
    onEnd: (o) => (outcome = o),
  });
  const out = await new Response(s).text();
  return { out, outcome: outcome! };
}

const openaiStream =
  [
    'data: {"id":"c","choices":[{"index":0,"text":"é \\"usage\\":{ ☃","finish_reason":null}]}',
    'data: {"id":"c","choices":[{"index":0,"text":"","finish_reason":"length"}]}',
    'data: {"id":"c","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}',
    'data: [DONE]',
  ].join('\n\n') + '\n\n';

describe('relaySse', () => {
  it('finds the usage and drops the forced usage chunk, whatever the chunking', async () => {
    const bytes = enc.encode(openaiStream);
    for (let cut = 1; cut < bytes.length; cut += 7) {
      const { out, outcome } = await relay('openai', false, openaiStream, [cut, Math.min(bytes.length, cut + 3)]);
      expect(outcome).toEqual({ status: 200, usage: { promptTokens: 4, completionTokens: 2 }, events: 2 });
      expect(out).toBe(openaiStream.replace(/data: \{"id":"c","choices":\[\],"usage".*\n\n/, ''));
    }
  });

  it('passes the usage chunk through unchanged when the client asked for it, and accepts CRLF', async () => {
    const crlf = openaiStream.replace(/\n\n/g, '\r\n\r\n');
    const { out, outcome } = await relay('openai', true, crlf, [10]);
    expect(outcome.usage).toEqual({ promptTokens: 4, completionTokens: 2 });
    expect(out.replace(/\r\n\r\n/g, '\n\n')).toBe(openaiStream);
  });

  it('LoRAX: reads the final details and nulls them when the client did not ask', async () => {
    const ev =
      'data: {"token":{"id":1,"text":"a","logprob":null,"special":false},"generated_text":"a","details":{"finish_reason":"length","prompt_tokens":3,"generated_tokens":1,"seed":null}}\n\n';
    const hidden = await relay('lorax', false, ev, [5]);
    expect(hidden.outcome.usage).toEqual({ promptTokens: 3, completionTokens: 1 });
    expect(JSON.parse(hidden.out.slice(6))).toEqual({
      token: { id: 1, text: 'a', logprob: null, special: false },
      generated_text: 'a',
      details: null,
    });
    expect((await relay('lorax', true, ev, [])).out).toBe(ev);
  });

  it('ends a broken stream with an error event (and [DONE] on OpenAI routes), dropping a torn event', async () => {
    const torn = openaiStream.slice(0, openaiStream.indexOf('"finish_reason":"length"'));
    const { out, outcome } = await relay('openai', false, torn, [], true);
    expect(outcome).toMatchObject({ status: 502, usage: undefined, events: 1 });
    const events = out.trim().split('\n\n');
    expect(events).toHaveLength(3);
    expect(JSON.parse(events[1]!.slice(6))).toEqual({
      error: { message: expect.any(String), type: 'server_error', code: 'worker_failed' },
    });
    expect(events[2]).toBe('data: [DONE]');
  });

  it('reports the status of an in-band worker error', async () => {
    const { outcome } = await relay(
      'openai',
      false,
      'data: {"error":{"message":"x","type":"internal_error","param":null,"code":500}}\n\ndata: [DONE]\n\n',
      [],
    );
    expect(outcome.status).toBe(500);
  });
});

describe('prepareRequest', () => {
  it('rewrites the adapter field, forces usage, and leaves the client body alone', () => {
    const body = { model: 'mine@2', prompt: 'x', stream: true, stream_options: { include_usage: false } };
    const p = prepareRequest('/v1/completions', body, 'ad_1234567890abcdef', 'tiny');
    expect(p).toMatchObject({ family: 'openai', stream: true, clientWantsUsage: false });
    expect(JSON.parse(p.json)).toEqual({
      model: 'ad_1234567890abcdef',
      prompt: 'x',
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(body.stream_options.include_usage).toBe(false);
    const l = prepareRequest(
      '/',
      { inputs: 'x', stream: true, parameters: { adapter_id: 'mine', details: true } },
      undefined,
      'tiny',
    );
    expect(l).toMatchObject({ family: 'lorax', stream: true, clientWantsUsage: true });
    expect(JSON.parse(l.json)).toEqual({ inputs: 'x', stream: true, parameters: { details: true } });
    expect(JSON.parse(prepareRequest('/generate', { inputs: 'x' }, 'ad_x', 'tiny').json)).toEqual({
      inputs: 'x',
      parameters: { adapter_id: 'ad_x' },
    });
    expect(() => prepareRequest('/v1/embeddings', {}, undefined, 'tiny')).toThrow(/does not forward/);
  });
});
