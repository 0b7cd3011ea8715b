// Helpers for talking to a worker: fixture paths, JSON posts, SSE parsing, metric reading.
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SIGNATURE_HEADER, signRequest } from '@loraplex/protocol';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
export const FIXTURES = join(REPO, 'packages', 'engine', 'test', 'fixtures', 'hf-tiny');
export const modelDir = (m: 'llama' | 'qwen2'): string => join(FIXTURES, m, 'base');
export const adaptersDir = (m: 'llama' | 'qwen2'): string => join(FIXTURES, m, 'adapters');
export const ADAPTERS = ['lora_all_r8', 'lora_qkvo_r16_rslora', 'lora_qv_r4'] as const;

export type Fetcher = (path: string, init?: RequestInit) => Promise<Response> | Response;

export function poster(fetcher: Fetcher) {
  return (path: string, body: unknown, init: RequestInit = {}): Promise<Response> =>
    Promise.resolve(
      fetcher(path, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: typeof body === 'string' ? body : JSON.stringify(body),
        ...init,
      }),
    );
}

/** The signature header that makes a request come from the platform (contract §1a). */
export function platformHeaders(secret: string, method: string, path: string, body = ''): Record<string, string> {
  return { [SIGNATURE_HEADER]: signRequest(secret, method, path, body) };
}

/** Like poster(), but every request is signed with the worker secret, as the API signs them. */
export function platformPoster(fetcher: Fetcher, secret: string) {
  return (
    path: string,
    body: unknown,
    init: RequestInit & { headers?: Record<string, string> } = {},
  ): Promise<Response> => {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    const headers = {
      'content-type': 'application/json',
      ...init.headers,
      ...platformHeaders(secret, 'POST', path, text),
    };
    return Promise.resolve(fetcher(path, { method: 'POST', ...init, headers, body: text }));
  };
}

/** The `data:` payloads of an SSE body, in order ('[DONE]' kept as a string). */
export function sseData(text: string): Array<Record<string, unknown> | string> {
  return text
    .split('\n\n')
    .filter((b) => b.trim() !== '')
    .map((b) => {
      const line = b.split('\n').find((l) => l.startsWith('data:'));
      if (!line) throw new Error(`not an SSE event: ${b}`);
      const data = line.slice(5).trim();
      return data === '[DONE]' ? data : (JSON.parse(data) as Record<string, unknown>);
    });
}

/** Value of a Prometheus sample (labels matched as a substring, e.g. 'adapter="x"'), 0 when absent. */
export function metric(text: string, name: string, labels = ''): number {
  let sum = 0,
    found = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!m || m[1] !== name || !(m[2] ?? '').includes(labels)) continue;
    sum += Number(m[3]);
    found = true;
  }
  return found ? sum : 0;
}

export async function until(
  cond: () => Promise<boolean> | boolean,
  timeoutMs = 5000,
  what = 'condition',
): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A TCP port free right now on 127.0.0.1 (for servers that take a fixed port, e.g. the stack's worker). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
