// The embedded stack: the API on the embedded defaults plus a worker child process that registers
// with heartbeats; an uploaded adapter is served end to end.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack } from '../src/stack.js';
import { writeZip } from './helpers/archive.js';
import { FIXTURES } from './helpers/setup.js';
import { freePort } from '../../worker/test/helpers/http.js';
import { CLI as WORKER_CLI } from '../../worker/test/helpers/process.js';

describe('startStack', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'lpx-stack-'));
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('starts the API and a worker, resolves after the first heartbeat, serves an uploaded adapter', async () => {
    const stack = await startStack({
      workerCli: WORKER_CLI,
      model: join(FIXTURES, 'base'),
      servedModelName: 'tiny-llama',
      dataDir,
      port: await freePort(),
      workerPort: await freePort(),
      workerArgs: ['--backend', 'cpu'],
      log: null,
    });
    try {
      const admin = { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' };
      const tenant = await (
        await fetch(`${stack.url}/v1/tenants`, {
          method: 'POST',
          headers: admin,
          body: JSON.stringify({ name: 'stack' }),
        })
      ).json();
      const key = (
        await (
          await fetch(`${stack.url}/v1/keys`, {
            method: 'POST',
            headers: admin,
            body: JSON.stringify({ tenant_id: tenant.id }),
          })
        ).json()
      ).key as string;
      const dir = join(FIXTURES, 'adapters', 'lora_qv_r4');
      const zip = writeZip(
        await Promise.all(
          ['adapter_config.json', 'adapter_model.safetensors'].map(async (name) => ({
            name,
            data: await readFile(join(dir, name)),
          })),
        ),
      );
      const up = await fetch(`${stack.url}/v1/adapters?name=qv`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/zip' },
        body: new Uint8Array(zip),
      });
      expect(up.status).toBe(201);
      const res = await fetch(`${stack.url}/v1/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'qv', prompt: 'hello', max_tokens: 4, temperature: 0 }),
      });
      expect(res.status).toBe(200);
      const body = await res.json();
      expect(body.choices[0].text.length).toBeGreaterThan(0);
    } finally {
      await stack.close();
    }
    await expect(fetch(`${stack.url}/health`)).rejects.toThrow();
  }, 240_000);
});
