// The whole platform through the SDK, the openai client and the CLI: the embedded stack (API + a
// worker child process on the fixture model), on the embedded defaults (PGlite, a local adapter
// store) and on the real parts (the Postgres server on 127.0.0.1, s3rver). Tenant and key
// creation, uploads of every fixture adapter (direct, and one through presigned multipart parts),
// greedy generation equal to Engine.generate, streaming, JSON mode validated with ajv, usage,
// isolation between tenants, and typed errors from real responses.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { startStack, type Stack } from '@loraplex/api';
import { Engine } from '@loraplex/engine';
import { Ajv } from 'ajv';
import OpenAI from 'openai';
import pg from 'pg';
import S3rver from 's3rver';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adaptersDir, ADAPTERS, freePort, modelDir } from '../../../apps/worker/test/helpers/http.js';
import {
  CLI as WORKER_CLI,
  ensureBuilt,
  spawnWorker,
  type WorkerProcess,
} from '../../../apps/worker/test/helpers/process.js';
import { AuthenticationError, Loraplex, NotFoundError, PermissionError, ValidationError } from '../src/index.js';

const CLI = resolve(fileURLToPath(import.meta.url), '../../../cli/dist/cli.js');
const PROMPT = 'The license';

/** Runs the CLI without blocking this process (the API under test runs in it). */
function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const child = spawn(process.execPath, [CLI, ...args], { env });
    let stdout = '',
      stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (status) => res({ status, stdout, stderr }));
  });
}

/** Greedy text of each fixture adapter of `model` from Engine.generate on its directory. */
async function referenceTexts(model: 'llama' | 'qwen2'): Promise<Record<string, string>> {
  const engine = await Engine.load(modelDir(model), { backend: 'cpu', threads: 1 });
  const out: Record<string, string> = {};
  for (const a of ADAPTERS) {
    await engine.loadAdapter(a, join(adaptersDir(model), a));
    out[a] = (
      await engine.generate([{ prompt: PROMPT, adapter: a, sampling: { maxTokens: 8, temperature: 0 } }])
    )[0]!.text;
  }
  await engine.close();
  return out;
}

let reference: Record<string, string>;
let qwenReference: Record<string, string>;
beforeAll(async () => {
  reference = await referenceTexts('llama');
  qwenReference = await referenceTexts('qwen2');
});

interface Variant {
  name: string;
  setup(dataDir: string): Promise<{
    databaseUrl?: string;
    s3?: { endpoint: string; region: string; bucket: string; forcePathStyle: boolean };
    cleanup(): Promise<void>;
  }>;
}

const variants: Variant[] = [
  { name: 'embedded defaults (PGlite, local store)', setup: async () => ({ cleanup: async () => undefined }) },
  {
    name: 'Postgres server and s3rver',
    setup: async (dataDir) => {
      const db = `lpx_e2e_${randomBytes(6).toString('hex')}`;
      const admin = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${db}`);
      const s3 = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: join(dataDir, 's3') });
      const { port } = await s3.run();
      const endpoint = `http://127.0.0.1:${port}`;
      // The worker child process reads S3 settings and credentials from the environment (the stack
      // reads the same variables, so they name the same store as the options below).
      Object.assign(process.env, {
        LORAPLEX_S3_ENDPOINT: endpoint,
        LORAPLEX_S3_BUCKET: 'adapters',
        AWS_ACCESS_KEY_ID: 'S3RVER',
        AWS_SECRET_ACCESS_KEY: 'S3RVER',
        AWS_REGION: 'us-east-1',
      });
      await new S3Client({
        endpoint,
        region: 'us-east-1',
        forcePathStyle: true,
        credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      }).send(new CreateBucketCommand({ Bucket: 'adapters' }));
      return {
        databaseUrl: `postgres://postgres@127.0.0.1:5432/${db}`,
        s3: { endpoint, region: 'us-east-1', bucket: 'adapters', forcePathStyle: true },
        cleanup: async () => {
          await s3.close();
          await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
          await admin.end();
        },
      };
    },
  },
];

describe.each(variants)('the platform end to end: $name', (variant) => {
  let stack: Stack;
  let dataDir: string;
  let cleanup: () => Promise<void>;
  let admin: Loraplex, alice: Loraplex, bob: Loraplex, aliceKey: string;
  let qwenWorker: WorkerProcess | undefined;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'lp-e2e-'));
    const v = await variant.setup(dataDir);
    // Shared with the second worker, which registers on its own (startStack reads it too).
    const secret = (process.env.LORAPLEX_WORKER_SECRET ??= randomBytes(16).toString('hex'));
    cleanup = v.cleanup;
    stack = await startStack({
      workerCli: WORKER_CLI,
      model: modelDir('llama'),
      servedModelName: 'tiny-llama',
      dataDir,
      port: await freePort(),
      workerPort: await freePort(),
      workerArgs: ['--backend', 'cpu', '--threads', '1', '--adapter-cache-dir', join(dataDir, 'worker-cache')],
      log: null,
      ...(v.databaseUrl ? { databaseUrl: v.databaseUrl } : {}),
      ...(v.s3 ? { s3: v.s3 } : {}),
    });
    // A second worker, for the Qwen2 base model, registering with the same API by heartbeats.
    ensureBuilt();
    qwenWorker = await spawnWorker([
      '--model',
      modelDir('qwen2'),
      '--served-model-name',
      'tiny-qwen2',
      '--api-url',
      stack.url,
      '--worker-secret',
      secret,
      '--heartbeat-interval',
      '0.5',
      '--backend',
      'cpu',
      '--threads',
      '1',
      '--adapter-cache-dir',
      join(dataDir, 'qwen-cache'),
    ]);
    admin = new Loraplex({ baseURL: stack.url, apiKey: stack.adminKey });
    const [ta, tb] = [
      await admin.tenants.create(`alice-${randomBytes(3).toString('hex')}`),
      await admin.tenants.create(`bob-${randomBytes(3).toString('hex')}`),
    ];
    aliceKey = (await admin.keys.create({ tenantId: ta.id }))!.key!;
    alice = new Loraplex({ baseURL: stack.url, apiKey: aliceKey });
    bob = new Loraplex({ baseURL: stack.url, apiKey: (await admin.keys.create({ tenantId: tb.id })).key! });
  }, 240_000);

  afterAll(async () => {
    qwenWorker?.child.kill('SIGTERM');
    await qwenWorker?.exited;
    await stack?.close();
    await cleanup?.();
    rmSync(dataDir, { recursive: true, force: true });
  }, 60_000);

  it('uploads every fixture adapter (one through presigned multipart parts) and generates exactly what Engine.generate gives', async () => {
    for (const [i, a] of ADAPTERS.entries()) {
      const phases = new Set<string>();
      const up = await alice.adapters.upload(join(adaptersDir('llama'), a), {
        name: a,
        baseModel: 'tiny-llama',
        onProgress: (p) => phases.add(p.phase),
        ...(i === 0 ? { multipartThreshold: 1 } : {}),
      });
      expect(up).toMatchObject({ name: a, version: 1, status: 'ready', base_model: 'tiny-llama' });
      expect(phases.has('done')).toBe(true);
      if (i === 0) expect(phases.has('validating')).toBe(true); // the presigned path
      const g = await alice.generate(PROMPT, { adapterId: a, maxNewTokens: 8 });
      expect(g.text).toBe(reference[a]);
      let streamed;
      for await (const e of alice.generateStream(PROMPT, { adapterId: `${a}@1`, maxNewTokens: 8 }))
        streamed = e.final ?? streamed;
      expect(streamed!.text).toBe(reference[a]);
    }
    expect((await alice.adapters.list()).map((x) => x.name).sort()).toEqual([...ADAPTERS].sort());
  }, 240_000);

  it('a second base model (Qwen2, its own worker): its fixture adapters upload against it and generate exactly', async () => {
    const deadline = Date.now() + 30_000;
    while (!(await alice.models.list()).some((m) => m.id === 'tiny-qwen2')) {
      if (Date.now() > deadline) throw new Error('the Qwen2 worker never registered');
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const a of ADAPTERS) {
      const up = await alice.adapters.upload(join(adaptersDir('qwen2'), a), {
        name: `qwen-${a}`,
        baseModel: 'tiny-qwen2',
      });
      expect(up).toMatchObject({ base_model: 'tiny-qwen2', status: 'ready' });
      expect((await alice.generate(PROMPT, { adapterId: `qwen-${a}`, maxNewTokens: 8 })).text).toBe(qwenReference[a]);
    }
  }, 120_000);

  it('JSON mode output parses and validates against its schema', async () => {
    const schema = {
      type: 'object',
      properties: {
        name: { type: 'string', maxLength: 12 },
        age: { type: 'integer', minimum: 0, maximum: 120 },
        ok: { type: 'boolean' },
      },
      required: ['name', 'age', 'ok'],
      additionalProperties: false,
    };
    const r = await alice.generate<{ name: string; age: number; ok: boolean }>('Person:', {
      adapterId: 'lora_qv_r4',
      maxNewTokens: 80,
      responseFormat: { type: 'json_object', schema },
    });
    expect(new Ajv().validate(schema, r.parsed)).toBe(true);
    const chat = await alice.chat([{ role: 'user', content: 'json please' }], {
      adapterId: 'lora_all_r8',
      maxNewTokens: 80,
      responseFormat: { type: 'json_object', schema },
    });
    expect(new Ajv().validate(schema, JSON.parse(chat.message.content))).toBe(true);
  }, 120_000);

  it('the openai client works unchanged: models, chat, streaming', async () => {
    const openai = new OpenAI({ baseURL: `${stack.url}/v1`, apiKey: aliceKey });
    const ids = (await openai.models.list()).data.map((m) => m.id);
    expect(ids).toEqual(expect.arrayContaining(['tiny-llama', 'lora_all_r8', 'lora_all_r8@1']));
    const c = await openai.completions.create({ model: 'lora_all_r8', prompt: PROMPT, max_tokens: 8, temperature: 0 });
    expect(c.choices[0]!.text).toBe(reference.lora_all_r8);
    expect(c.model).toBe('lora_all_r8');
    let text = '';
    for await (const chunk of await openai.completions.create({
      model: 'lora_all_r8',
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 0,
      stream: true,
    }))
      text += chunk.choices[0]?.text ?? '';
    expect(reference.lora_all_r8!.startsWith(text)).toBe(true);
  }, 60_000);

  it('isolation: another tenant gets the 404 of a missing adapter, by name, version and id', async () => {
    const mine = await alice.adapters.get('lora_qv_r4');
    for (const ref of ['lora_qv_r4', 'lora_qv_r4@1', mine.id]) {
      const e1 = await bob.generate(PROMPT, { adapterId: ref }).catch((e: unknown) => e);
      expect(e1, ref).toBeInstanceOf(NotFoundError);
      expect((e1 as Error).message).not.toContain(mine.id === ref ? 'alice' : mine.id);
      const e2 = await bob.adapters.get(ref).catch((e: unknown) => e);
      expect(e2).toBeInstanceOf(NotFoundError);
      const missing = await bob.adapters.get(`nope-${ref}`).catch((e: unknown) => e);
      expect((e2 as NotFoundError).status).toBe((missing as NotFoundError).status);
    }
    expect(await bob.adapters.list()).toEqual([]);
  }, 60_000);

  it('every error class a program acts on comes from a real response', async () => {
    expect(
      await new Loraplex({ baseURL: stack.url, apiKey: 'lpx_00000000_0000000000000000000000000000000a' }).models
        .list()
        .catch((e: unknown) => e),
    ).toBeInstanceOf(AuthenticationError);
    const readOnly = new Loraplex({
      baseURL: stack.url,
      apiKey: (
        await admin.keys.create({
          tenantId: (await admin.tenants.create(`ro-${randomBytes(3).toString('hex')}`)).id,
          scopes: ['inference'],
        })
      ).key!,
    });
    expect(
      await readOnly.adapters
        .upload(join(adaptersDir('llama'), 'lora_qv_r4'), { name: 'x', baseModel: 'tiny-llama' })
        .catch((e: unknown) => e),
    ).toBeInstanceOf(PermissionError);
    const bad = join(dataDir, 'bad-adapter');
    cpSync(join(adaptersDir('llama'), 'lora_qv_r4'), bad, { recursive: true });
    writeFileSync(join(bad, 'adapter_model.safetensors'), 'not safetensors');
    const e = await alice.adapters.upload(bad, { name: 'bad', baseModel: 'tiny-llama' }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ValidationError);
    expect((e as ValidationError).status).toBe(422);
    expect((await alice.adapters.list()).some((a) => a.name === 'bad')).toBe(false);
    expect(
      await alice.generate(PROMPT, { adapterId: 'tiny-llama', maxNewTokens: 100_000 }).catch((err: unknown) => err),
    ).toBeInstanceOf(ValidationError);
    // Two base models are served: a request that names none is a 400 saying so.
    const unnamed = await alice.generate(PROMPT).catch((err: unknown) => err);
    expect(unnamed).toBeInstanceOf(ValidationError);
    expect((unnamed as Error).message).toMatch(/several base models/);
  }, 60_000);

  it('usage is recorded per adapter, and the CLI drives the same API', async () => {
    const deadline = Date.now() + 10_000;
    let rows = await alice.usage({ groupBy: 'adapter' });
    // Usage is written in batches (about once a second): wait for the earlier tests' requests.
    while (!rows.some((r) => r.adapter?.startsWith('lora_all_r8') && r.requests >= 5) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      rows = await alice.usage({ groupBy: 'adapter' });
    }
    const row = rows.find((r) => r.adapter?.startsWith('lora_all_r8'));
    expect(row?.requests).toBeGreaterThanOrEqual(5); // generate, stream, chat, 2 x openai
    expect(row?.completion_tokens).toBeGreaterThan(0);
    const env = { ...process.env, LORAPLEX_BASE_URL: stack.url, LORAPLEX_API_KEY: aliceKey };
    const list = await runCli(['adapters', 'list'], env);
    expect(list.status, list.stderr).toBe(0);
    expect(
      (JSON.parse(list.stdout) as Array<{ name: string }>)
        .map((a) => a.name)
        .filter((n) => !n.startsWith('qwen-'))
        .sort(),
    ).toEqual([...ADAPTERS].sort());
    const gen = await runCli(['generate', '--adapter', 'lora_qkvo_r16_rslora', '--max-new-tokens', '8', PROMPT], env);
    expect(gen.status, gen.stderr).toBe(0);
    expect(reference.lora_qkvo_r16_rslora!.startsWith(gen.stdout.replace(/\n$/, ''))).toBe(true);
    const del = await runCli(['adapters', 'delete', 'lora_qkvo_r16_rslora'], env);
    expect(del.status, del.stderr).toBe(0);
    expect(await alice.generate(PROMPT, { adapterId: 'lora_qkvo_r16_rslora' }).catch((e: unknown) => e)).toBeInstanceOf(
      NotFoundError,
    );
  }, 120_000);
});
