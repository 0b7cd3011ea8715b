// The worker side of the API contract (docs/platform-contract.md): signed adapter descriptors and
// registration heartbeats, on the real engine and a real HTTP listener.
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '@loraplex/engine';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signDescriptor, type SignedDescriptor } from '../src/adapters/descriptors.js';
import { startWorker } from '../src/serve.js';
import { createWorker, type Worker } from '../src/worker.js';
import { adaptersDir, modelDir, platformPoster, until } from './helpers/http.js';

const tmp = mkdtempSync(join(tmpdir(), 'lp-descriptors-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const SECRET = 'test-worker-secret';
const ID = 'ad_0123456789abcdef01';
const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');

function descriptorFor(dir: string, over: Partial<SignedDescriptor> = {}): SignedDescriptor {
  const files = readdirSync(dir)
    .sort()
    .map((name) => ({
      name: name as SignedDescriptor['files'][number]['name'],
      size: readFileSync(join(dir, name)).length,
      sha256: sha(join(dir, name)),
    }));
  return {
    v: 1,
    id: ID,
    base_model: 'tiny',
    rank: 8,
    storage: { kind: 'dir', path: dir },
    files,
    exp: Math.floor(Date.now() / 1000) + 300,
    ...over,
  };
}

describe('signed adapter descriptors', () => {
  let worker: Worker;
  let reference: number[];
  const store = join(tmp, 'store', ID);
  beforeAll(async () => {
    cpSync(join(adaptersDir('llama'), 'lora_all_r8'), store, { recursive: true });
    const engine = await Engine.load(modelDir('llama'), { backend: 'cpu', threads: 1 });
    await engine.loadAdapter('a', store);
    reference = (
      await engine.generate([
        { prompt: 'x', adapter: 'a', sampling: { maxTokens: 6, temperature: 0, ignoreEos: true } },
      ])
    )[0]!.tokens;
    await engine.close();
    worker = await createWorker({
      model: modelDir('llama'),
      servedModelName: 'tiny',
      workerSecret: SECRET,
      adapterCacheDir: join(tmp, 'cache'),
      backend: 'cpu',
      threads: 1,
    });
  });
  afterAll(() => worker?.shutdown());

  const generate = (model: string, header?: string) =>
    platformPoster((p, init) => worker.app.request(p, init), SECRET)(
      '/generate',
      { inputs: 'x', parameters: { adapter_id: model, max_new_tokens: 6, details: true, ignore_eos_token: true } },
      header === undefined ? {} : { headers: { 'x-loraplex-adapter': header } },
    );

  it("serves an adapter described by a valid descriptor, with the engine's exact tokens", async () => {
    const r = await generate(ID, signDescriptor(descriptorFor(store), SECRET));
    expect(r.status).toBe(200);
    expect((await r.json()).details.tokens.map((t: { id: number }) => t.id)).toEqual(reference);
  });

  it('never serves a descriptor adapter to a request without a valid descriptor for it', async () => {
    const r = await generate(ID);
    expect(r.status).toBe(404);
    expect(JSON.stringify(await r.json())).not.toContain(store);
  });

  it('refuses bad signatures, other secrets, expired and malformed descriptors with 401', async () => {
    const good = signDescriptor(descriptorFor(store), SECRET);
    const [payload, sig] = good.split('.');
    const tampered = `${Buffer.from(JSON.stringify({ ...descriptorFor(store), storage: { kind: 'dir', path: '/etc' } })).toString('base64url')}.${sig}`;
    for (const h of [
      tampered,
      signDescriptor(descriptorFor(store), 'another-secret'),
      signDescriptor(descriptorFor(store, { exp: 1000 }), SECRET),
      `${payload}`,
      'garbage',
      `${payload}.${sig}.x`,
    ]) {
      const r = await generate(ID, h);
      expect(r.status, h).toBe(401);
    }
  });

  it('a descriptor for another adapter or another base model is a 400', async () => {
    expect((await generate('ad_ffffffffffffffffff', signDescriptor(descriptorFor(store), SECRET))).status).toBe(400);
    expect((await generate(ID, signDescriptor(descriptorFor(store, { base_model: 'other' }), SECRET))).status).toBe(
      400,
    );
  });

  it("files that do not match the descriptor's sha256 fail that adapter (424) and stay out of the cache", async () => {
    const other = join(tmp, 'store', 'ad_99999999999999999999');
    cpSync(join(adaptersDir('llama'), 'lora_qv_r4'), other, { recursive: true });
    const d = descriptorFor(other, { id: 'ad_99999999999999999999' });
    writeFileSync(
      join(other, 'adapter_config.json'),
      readFileSync(join(other, 'adapter_config.json'), 'utf8').replace('"r": 4', '"r": 4 '),
    );
    const r = await generate('ad_99999999999999999999', signDescriptor(d, SECRET));
    expect(r.status).toBe(424);
    expect((await r.json()).error).toMatch(/checksum mismatch|downloaded/);
    expect(readdirSync(join(tmp, 'cache')).some((e) => e.startsWith('ad_9999'))).toBe(false);
  });
});

describe('heartbeats', () => {
  it("registers with the API every interval with the contract's body, and says draining on shutdown", async () => {
    const beats: Array<{ headers: IncomingHttpHeaders; body: any }> = [];
    const api = createServer((req, res) => {
      let text = '';
      req.on('data', (d: Buffer) => (text += d.toString()));
      req.on('end', () => {
        beats.push({ headers: req.headers, body: JSON.parse(text) });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      });
    });
    await new Promise<void>((r) => api.listen(0, '127.0.0.1', r));
    const apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
    const w = await startWorker({
      model: modelDir('llama'),
      servedModelName: 'tiny',
      adapterDir: adaptersDir('llama'),
      workerSecret: SECRET,
      apiUrl,
      heartbeatInterval: 0.1,
      workerId: 'wk_test',
      backend: 'cpu',
      threads: 1,
      port: 0,
    });
    await until(() => beats.length >= 2, 5000, 'two heartbeats');
    const b = beats[0]!;
    expect(b.headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(b.body).toMatchObject({
      id: 'wk_test',
      url: `http://127.0.0.1:${w.port}`,
      base_model: 'tiny',
      max_lora_rank: 64,
      draining: false,
      load: { running: 0, waiting: 0 },
    });
    expect(b.body.model_config).toEqual(JSON.parse(readFileSync(join(modelDir('llama'), 'config.json'), 'utf8')));
    expect(b.body.capacity).toMatchObject({ adapter_slots: 8, host_adapters: 64 });
    expect(Array.isArray(b.body.resident_adapters)).toBe(true);
    expect(b.body).toMatchObject({ slot_adapters: [], host_adapters: [] });
    await w.drain();
    expect(beats[beats.length - 1]!.body.draining).toBe(true);
    await new Promise<void>((r) => api.close(() => r()));
  });
});
