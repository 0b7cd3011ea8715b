// The API over a real socket (startApiServer on the embedded defaults): a streamed upload, the 413
// of an oversized stream, and clean shutdown.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig } from '../src/config.js';
import { startApiServer, type ApiServer } from '../src/server.js';
import { writeTarGz } from './helpers/archive.js';
import { ADMIN_KEY, FIXTURES, RecordingRouting, seedBaseModel } from './helpers/setup.js';
import { createValidation } from '../src/wiring.js';

describe('API server on the embedded defaults', () => {
  let dataDir: string;
  let api: ApiServer;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'lpx-server-'));
    const config = defaultConfig({
      dataDir,
      port: 0,
      adminKey: ADMIN_KEY,
      workerSecret: 's',
      upload: { maxUploadBytes: 300_000, maxFiles: 8, partSize: 1 << 20, ttlS: 600 },
    });
    api = await startApiServer(config, {
      validation: createValidation(),
      routing: (db) => Object.assign(new RecordingRouting(db), { close: async () => undefined }),
    });
    await seedBaseModel(api.services.db);
  });
  afterAll(async () => {
    await api?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('stores adapters under <dataDir>/adapters and PGlite under <dataDir>/pg', async () => {
    const admin = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };
    const tenant = await (
      await fetch(`${api.url}/v1/tenants`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'sock' }) })
    ).json();
    const key = (
      await (
        await fetch(`${api.url}/v1/keys`, {
          method: 'POST',
          headers: admin,
          body: JSON.stringify({ tenant_id: tenant.id }),
        })
      ).json()
    ).key as string;
    const dir = join(FIXTURES, 'adapters', 'lora_all_r8');
    const tgz = writeTarGz(
      await Promise.all(
        ['adapter_config.json', 'adapter_model.safetensors'].map(async (name) => ({
          name,
          data: await readFile(join(dir, name)),
        })),
      ),
    );
    const up = await fetch(`${api.url}/v1/adapters?name=sock`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/gzip' },
      body: new Uint8Array(tgz),
    });
    expect(up.status).toBe(201);
    const ad = await up.json();
    expect((await readdir(join(dataDir, 'adapters', tenant.id, ad.id))).sort()).toEqual([
      'adapter_config.json',
      'adapter_model.safetensors',
    ]);
    expect((await readdir(join(dataDir, 'pg'))).length).toBeGreaterThan(0);

    // A stream past the limit, with no Content-Length: 413 while it is still being sent. The bytes are
    // a valid, incompressible tar.gz, so the archive reader keeps reading until the limit stops it.
    const huge = writeTarGz([{ name: 'adapter_model.safetensors', data: randomBytes(16_000_000) }]);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(ctrl) {
        if (sent >= huge.length) return ctrl.close();
        ctrl.enqueue(new Uint8Array(huge.subarray(sent, sent + 64 * 1024)));
        sent += 64 * 1024;
      },
    });
    const big = await fetch(`${api.url}/v1/adapters?name=big`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/gzip' },
      body,
      duplex: 'half',
    } as RequestInit);
    const sentAtAnswer = sent;
    expect(big.status).toBe(413);
    expect((await big.json()).error.code).toBe('payload_too_large');
    expect(sentAtAnswer).toBeLessThan(huge.length);
    expect((await readdir(join(dataDir, 'adapters', tenant.id))).length).toBe(1);
  });
});
