// The embedded stack: the API on the embedded defaults plus a worker child process. The full run
// needs a worker that sends heartbeats (--api-url) and the routing and validation modules wired in
// (src/wiring.ts); until then the test checks that startStack fails clearly and leaves nothing running.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { USAGE } from '@loraplex/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack } from '../src/stack.js';
import { wiredModules } from '../src/wiring.js';
import { writeZip } from './helpers/archive.js';
import { FIXTURES, RecordingRouting } from './helpers/setup.js';
import { testValidation } from './helpers/validation.js';

const workerHeartbeats = USAGE.includes('--api-url');
const routingWired = wiredModules.routing && wiredModules.validation;

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('startStack', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'lpx-stack-'));
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it.runIf(workerHeartbeats && routingWired)('starts the API and a worker, resolves after the first heartbeat, serves an uploaded adapter', async () => {
    const stack = await startStack({ model: join(FIXTURES, 'base'), servedModelName: 'tiny-llama', dataDir, port: await freePort(), workerPort: await freePort(), workerArgs: ['--backend', 'cpu'], log: null });
    try {
      const admin = { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' };
      const tenant = await (await fetch(`${stack.url}/v1/tenants`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'stack' }) })).json();
      const key = (await (await fetch(`${stack.url}/v1/keys`, { method: 'POST', headers: admin, body: JSON.stringify({ tenant_id: tenant.id }) })).json()).key as string;
      const dir = join(FIXTURES, 'adapters', 'lora_qv_r4');
      const zip = writeZip(await Promise.all(['adapter_config.json', 'adapter_model.safetensors'].map(async (name) => ({ name, data: await readFile(join(dir, name)) }))));
      const up = await fetch(`${stack.url}/v1/adapters?name=qv`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/zip' }, body: new Uint8Array(zip) });
      expect(up.status).toBe(201);
      const res = await fetch(`${stack.url}/v1/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'qv', prompt: 'hello', max_tokens: 4, temperature: 0 }) });
      expect(res.status).toBe(200);
      const body = await res.json();
      expect(body.choices[0].text.length).toBeGreaterThan(0);
    } finally {
      await stack.close();
    }
    await expect(fetch(`${stack.url}/health`)).rejects.toThrow();
  }, 240_000);

  it.runIf(!workerHeartbeats)('fails clearly when the worker cannot send heartbeats, and stops the API', async () => {
    const port = await freePort();
    const err = await startStack({
      model: join(FIXTURES, 'base'),
      dataDir,
      port,
      workerPort: await freePort(),
      log: null,
      startTimeoutMs: 60_000,
      wiring: { validation: testValidation, routing: (db) => Object.assign(new RecordingRouting(db), { close: async () => undefined }) },
    }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/worker exited .* before its first heartbeat/s);
    expect(err?.message).toMatch(/api-url/);
    await expect(fetch(`http://127.0.0.1:${port}/health`)).rejects.toThrow(); // the API was closed
  }, 120_000);
});
