// A minimal HTTP front over the Router for the routing tests (the real app composition lives in
// src/app.ts): the inference routes resolve `model` / `parameters.adapter_id` to a fixture adapter
// target or the base model, forward through the Router, and collect every usage report.
import { serve, type ServerType } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AdapterTarget } from '../../src/worker-proxy/descriptor.js';
import type { Router, Usage } from '../../src/worker-proxy/router.js';
import { ADAPTER_DIR, BASE_MODEL } from './routing-workers.js';

export const FIXTURE_ADAPTERS = { lora_all_r8: 8, lora_qv_r4: 4, lora_qkvo_r16_rslora: 16 } as const;

/** The fixture adapter as the API would describe it: an ad_ id, its directory, every file's size and sha256. */
export function adapterTarget(name: keyof typeof FIXTURE_ADAPTERS): AdapterTarget {
  const dir = join(ADAPTER_DIR, name);
  const files = readdirSync(dir)
    .sort()
    .map((f) => {
      const bytes = readFileSync(join(dir, f));
      return { name: f, size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') };
    });
  return {
    id: adapterId(name),
    baseModel: BASE_MODEL,
    rank: FIXTURE_ADAPTERS[name],
    storage: { kind: 'dir', path: dir },
    files,
  };
}

/** A stable adapter id for a fixture adapter name. */
export function adapterId(name: string): string {
  return `ad_${createHash('sha256').update(name).digest('hex').slice(0, 20)}`;
}

function adapterOf(path: string, body: Record<string, unknown>): AdapterTarget | undefined {
  const name = path.startsWith('/v1/')
    ? body.model
    : (body.parameters as { adapter_id?: unknown } | undefined)?.adapter_id;
  return typeof name === 'string' && name in FIXTURE_ADAPTERS
    ? adapterTarget(name as keyof typeof FIXTURE_ADAPTERS)
    : undefined;
}

export interface RoutingServer {
  url: string;
  usage: Array<Usage & { path: string; adapter: string | null }>;
  close(): Promise<void>;
}

export async function serveRouter(router: Router): Promise<RoutingServer> {
  const usage: RoutingServer['usage'] = [];
  const app = new Hono();
  const forward = async function forwardToWorker(c: Context): Promise<Response> {
    const body = (await c.req.json()) as Record<string, unknown>;
    const adapter = adapterOf(c.req.path, body);
    return router.forward({
      path: c.req.path,
      body,
      baseModel: BASE_MODEL,
      signal: c.req.raw.signal,
      ...(adapter ? { adapter } : {}),
      onUsage: (u) => usage.push({ ...u, path: c.req.path, adapter: adapter?.id ?? null }),
    });
  };
  for (const p of ['/v1/completions', '/v1/chat/completions', '/generate', '/generate_stream', '/'])
    app.post(p, forward);
  const server: ServerType = await new Promise((res) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => res(s));
  });
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    usage,
    close: () =>
      new Promise<void>((res) => {
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
        server.close(() => res());
      }),
  };
}

export async function post(url: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...init,
  });
}
