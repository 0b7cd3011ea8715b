// `loraplex-api stack` (what `loraplex dev` runs) reads the same settings as `serve`: a real stack
// process started with LORAPLEX_MAX_UPLOAD_BYTES refuses a larger upload with 413, and stops
// cleanly (API drained, worker gone) on SIGTERM.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../worker/test/helpers/http.js';
import { CLI as WORKER_CLI } from '../../worker/test/helpers/process.js';
import { writeZip } from './helpers/archive.js';
import { spawnApi, type ApiProcess } from './helpers/api-process.js';
import { ADMIN_KEY, FIXTURES } from './helpers/setup.js';

let stack: ApiProcess | undefined;
let dataDir: string | undefined;

afterAll(async () => {
  if (stack && stack.child.exitCode === null && stack.child.signalCode === null) stack.child.kill('SIGKILL');
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('loraplex-api stack configuration', () => {
  it('honours LORAPLEX_MAX_UPLOAD_BYTES like serve', async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'lpx-stack-config-'));
    const workerPort = await freePort();
    stack = await spawnApi(
      [
        'stack',
        '--model',
        join(FIXTURES, 'base'),
        '--served-model-name',
        'tiny-llama',
        '--port',
        String(await freePort()),
        '--worker-port',
        String(workerPort),
        '--data-dir',
        dataDir,
        '--worker-cli',
        WORKER_CLI,
      ],
      {
        LORAPLEX_MAX_UPLOAD_BYTES: '2000',
        LORAPLEX_ADMIN_KEY: ADMIN_KEY,
      },
      /loraplex API: (http:\/\/\S+)/,
      120_000,
    );
    const admin = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };
    const tenant = (await (
      await fetch(`${stack.url}/v1/tenants`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ name: 'limits' }),
      })
    ).json()) as { id: string };
    const { key } = (await (
      await fetch(`${stack.url}/v1/keys`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ tenant_id: tenant.id }),
      })
    ).json()) as { key: string };
    const dir = join(FIXTURES, 'adapters', 'lora_qv_r4');
    const zip = writeZip(
      await Promise.all(
        ['adapter_config.json', 'adapter_model.safetensors'].map(async (name) => ({
          name,
          data: await readFile(join(dir, name)),
        })),
      ),
    );
    expect(zip.length).toBeGreaterThan(2000);
    const up = await fetch(`${stack.url}/v1/adapters?name=big`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/zip' },
      body: new Uint8Array(zip),
    });
    expect(up.status).toBe(413);
    expect(((await up.json()) as { error: { code: string } }).error.code).toBe('payload_too_large');

    stack.child.kill('SIGTERM');
    expect(await stack.exited).toEqual({ code: 0, signal: null });
    await expect(fetch(`http://127.0.0.1:${workerPort}/health`)).rejects.toThrow();
  }, 180_000);
});
