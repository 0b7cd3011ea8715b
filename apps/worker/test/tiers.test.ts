// Adapter tiers on the real engine: the watched directory's re-scan, S3 (a real S3-protocol server,
// s3rver) through the checksummed disk cache into host memory and the engine's slots, and the 429
// when every adapter host memory can hold is in use.
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { Engine } from '@loraplex/engine';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeAdapter, writeModel } from '../../../packages/engine/test/helpers/gen-model.js';
import { makeS3Client } from '../src/adapters/s3-source.js';
import { createWorker, type Worker } from '../src/worker.js';
import { ADAPTERS, adaptersDir, metric, modelDir, poster, until } from './helpers/http.js';

const tmp = mkdtempSync(join(tmpdir(), 'lp-tiers-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const json = async (r: Response): Promise<any> => r.json();

/** Greedy tokens of each fixture adapter from Engine.generate on its local directory. */
async function referenceTokens(): Promise<Record<string, number[]>> {
  const engine = await Engine.load(modelDir('llama'), { backend: 'cpu', threads: 1 });
  const out: Record<string, number[]> = {};
  for (const a of ADAPTERS) {
    await engine.loadAdapter(a, join(adaptersDir('llama'), a));
    const [g] = await engine.generate([
      { prompt: 'x', adapter: a, sampling: { maxTokens: 8, temperature: 0, ignoreEos: true } },
    ]);
    out[a] = g!.tokens;
  }
  await engine.close();
  return out;
}

async function completionTokens(worker: Worker, model: string): Promise<{ status: number; body: any }> {
  const r = await poster((p, init) => worker.app.request(p, init))('/generate', {
    inputs: 'x',
    parameters: { adapter_id: model, max_new_tokens: 8, details: true, ignore_eos_token: true },
  });
  return { status: r.status, body: await json(r) };
}

describe('the watched adapter directory', () => {
  let worker: Worker;
  const dir = join(tmp, 'watched');
  beforeAll(async () => {
    mkdirSync(dir);
    symlinkSync(join(adaptersDir('llama'), 'lora_qv_r4'), join(dir, 'lora_qv_r4'));
    worker = await createWorker({
      model: modelDir('llama'),
      servedModelName: 'tiny',
      adapterDir: dir,
      adapterRefreshInterval: 0.2,
      backend: 'cpu',
      threads: 1,
    });
  });
  afterAll(() => worker?.shutdown());
  const ids = async (): Promise<string[]> =>
    (await json(await worker.app.request('/v1/models'))).data.map((m: { id: string }) => m.id);

  it('an adapter added to the directory appears after the refresh interval; a removed one disappears', async () => {
    expect(await ids()).toEqual(['tiny', 'lora_qv_r4']);
    cpSync(join(adaptersDir('llama'), 'lora_all_r8'), join(dir, 'lora_all_r8'), { recursive: true });
    await until(async () => (await ids()).includes('lora_all_r8'), 5000, 'the new adapter in /v1/models');
    expect((await completionTokens(worker, 'lora_all_r8')).status).toBe(200);
    rmSync(join(dir, 'lora_qv_r4'));
    await until(async () => !(await ids()).includes('lora_qv_r4'), 5000, 'the removed adapter to leave /v1/models');
    expect((await completionTokens(worker, 'lora_qv_r4')).status).toBe(404);
  });
});

describe('adapters in S3 through the disk cache', () => {
  let server: S3rver;
  let worker: Worker;
  let reference: Record<string, number[]>;
  const cacheDir = join(tmp, 'disk-cache');
  beforeAll(async () => {
    server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: join(tmp, 's3') });
    const { port } = await server.run();
    process.env.LORAPLEX_S3_ENDPOINT = `http://127.0.0.1:${port}`;
    process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
    process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
    const s3 = makeS3Client({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', forcePathStyle: true });
    await s3.send(new CreateBucketCommand({ Bucket: 'models' }));
    for (const a of ADAPTERS) {
      for (const f of readdirSync(join(adaptersDir('llama'), a))) {
        await s3.send(
          new PutObjectCommand({
            Bucket: 'models',
            Key: `tenants/t1/${a}/${f}`,
            Body: readFileSync(join(adaptersDir('llama'), a, f)),
          }),
        );
      }
    }
    // An adapter whose object changes after it was listed: its download no longer matches the listed checksum.
    for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
      await s3.send(
        new PutObjectCommand({
          Bucket: 'models',
          Key: `tenants/t1/changed/${f}`,
          Body: readFileSync(join(adaptersDir('llama'), 'lora_qv_r4', f)),
        }),
      );
    }
    reference = await referenceTokens();
    // One host entry and one slot: every switch of adapter goes down to the disk tier and back up.
    worker = await createWorker({
      model: modelDir('llama'),
      servedModelName: 'tiny',
      adapterS3: 's3://models/tenants/t1',
      adapterRefreshInterval: 0,
      adapterCacheDir: cacheDir,
      hostCacheAdapters: 1,
      maxAdapters: 1,
      backend: 'cpu',
      threads: 1,
    });
    const st = readFileSync(join(adaptersDir('llama'), 'lora_qv_r4', 'adapter_model.safetensors'));
    st[st.length - 1] = st[st.length - 1]! ^ 0xff;
    await s3.send(
      new PutObjectCommand({ Bucket: 'models', Key: 'tenants/t1/changed/adapter_model.safetensors', Body: st }),
    );
  });
  afterAll(async () => {
    await worker?.shutdown();
    await server?.close();
    delete process.env.LORAPLEX_S3_ENDPOINT;
  });

  it('lists the adapters under the prefix with their s3:// root', async () => {
    const body = await json(await worker.app.request('/v1/models'));
    expect(body.data.map((m: { id: string }) => m.id)).toEqual(['tiny', 'changed', ...ADAPTERS]);
    expect(body.data[2].root).toBe('s3://models/tenants/t1/lora_all_r8');
  });

  it('each adapter, fetched from S3, gives exactly the tokens of Engine.generate on its local directory', async () => {
    for (const a of [...ADAPTERS, ...ADAPTERS]) {
      const { status, body } = await completionTokens(worker, a);
      expect(status).toBe(200);
      expect(body.details.tokens.map((t: { id: number }) => t.id)).toEqual(reference[a]);
    }
    const entries = readdirSync(cacheDir);
    expect(entries.filter((e) => ADAPTERS.some((a) => e.startsWith(`${a}--`)))).toHaveLength(3);
    expect(entries.some((e) => e.includes('.tmp-'))).toBe(false);
    const metrics = await (await worker.app.request('/metrics')).text();
    expect(metric(metrics, 'loraplex_adapters_disk')).toBe(3);
    expect(metric(metrics, 'loraplex_adapters_host')).toBe(1);
  });

  it('a disk-cache file changed on disk is detected and fetched again', async () => {
    const entry = readdirSync(cacheDir).find((e) => e.startsWith('lora_all_r8--'))!;
    const file = join(cacheDir, entry, 'adapter_model.safetensors');
    const good = readFileSync(file);
    const bad = Buffer.from(good);
    bad[bad.length - 1] = bad[bad.length - 1]! ^ 0xff;
    writeFileSync(file, bad);
    await completionTokens(worker, 'lora_qv_r4'); // evicts lora_all_r8 from host memory and the slot
    const { status, body } = await completionTokens(worker, 'lora_all_r8');
    expect(status).toBe(200);
    expect(body.details.tokens.map((t: { id: number }) => t.id)).toEqual(reference.lora_all_r8);
    expect(
      readFileSync(
        join(
          cacheDir,
          readdirSync(cacheDir).find((e) => e.startsWith('lora_all_r8--'))!,
          'adapter_model.safetensors',
        ),
      ),
    ).toEqual(good);
  });

  it('a download that does not match the listed checksum fails that adapter only (424), leaving nothing in the cache', async () => {
    const { status, body } = await completionTokens(worker, 'changed');
    expect(status).toBe(424);
    expect(body.error).toMatch(/checksum mismatch/);
    expect(readdirSync(cacheDir).some((e) => e.startsWith('changed--'))).toBe(false);
    expect((await completionTokens(worker, 'lora_qv_r4')).status).toBe(200);
  });
});

describe('more distinct adapters in use than host memory holds', () => {
  let worker: Worker;
  beforeAll(async () => {
    // A model slow enough (a few ms per step) that a long request is surely still running.
    const model = join(tmp, 'slow-model');
    writeModel(model, {
      vocab: 512,
      hidden: 384,
      intermediate: 1024,
      layers: 6,
      heads: 6,
      kvHeads: 2,
      maxPositions: 512,
      seed: 3,
    });
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) cpSync(join(modelDir('llama'), f), join(model, f));
    const dims = { H: 384, I: 1024, Q: 384, KV: 128 };
    for (const [i, a] of ['a1', 'a2', 'a3'].entries())
      writeAdapter(join(tmp, 'slow-adapters', a), { r: 4, seed: i + 1, layers: 6, dims });
    worker = await createWorker({
      model,
      adapterDir: join(tmp, 'slow-adapters'),
      hostCacheAdapters: 2,
      maxAdapters: 4,
      backend: 'cpu',
      threads: 1,
    });
  });
  afterAll(() => worker?.shutdown());

  it('answers 429 with Retry-After, then serves the adapter once one is free', async () => {
    const post = poster((p, init) => worker.app.request(p, init));
    const long = (adapter: string, ctl: AbortController) =>
      post(
        '/v1/completions',
        { model: adapter, prompt: 'x', max_tokens: 400, ignore_eos: true, stream: true },
        { signal: ctl.signal },
      );
    const c1 = new AbortController(),
      c2 = new AbortController();
    const [r1, r2] = await Promise.all([long('a1', c1), long('a2', c2)]);
    const reader = r1.body!.getReader();
    await reader.read(); // a1 is running
    const refused = await post('/v1/completions', { model: 'a3', prompt: 'x', max_tokens: 2 });
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await json(refused)).error.type).toBe('rate_limit_error');
    // The adapters in use keep serving.
    expect((await post('/v1/completions', { model: 'a1', prompt: 'x', max_tokens: 2 })).status).toBe(200);
    c1.abort();
    c2.abort();
    await reader.cancel().catch(() => undefined);
    await r2.body?.cancel().catch(() => undefined);
    await until(() => worker.scheduler.runningCount === 0, 10_000, 'the cancelled requests to end');
    const ok = await post('/v1/completions', { model: 'a3', prompt: 'x', max_tokens: 2 });
    expect(ok.status).toBe(200);
  });
});
