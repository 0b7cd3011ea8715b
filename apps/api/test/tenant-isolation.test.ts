// Tenant isolation through the API of the embedded stack (a real worker on the fixture model), on
// the embedded defaults (PGlite, directory store) and on Postgres + S3 (s3rver). Tenant A uploads
// adapters and starts a presigned upload; tenant B then names A's adapters by name, name@version,
// id and storage key, A's tenant id, key id and upload id, on every route, before and after A's
// adapter is hot on the worker. Every answer must equal, byte for byte once the identifier itself
// is normalised, the answer for an identifier of the same kind that never existed, and nothing B
// receives may contain any of A's identifiers.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../src/stack.js';
import { writeZip } from './helpers/archive.js';
import { leaked, neverExisting, normalise, probesFor, send, type Answer } from './helpers/isolation.js';
import { startS3, type TestS3 } from './helpers/s3.js';
import { BASE_MODEL, FIXTURES, PG_ADMIN_URL } from './helpers/setup.js';
import { freePort } from '../../worker/test/helpers/http.js';
import { CLI as WORKER_CLI } from '../../worker/test/helpers/process.js';

const ADAPTER_FILES = ['adapter_config.json', 'adapter_model.safetensors'];

interface Variant {
  name: string;
  setup(): Promise<{ databaseUrl?: string; s3?: TestS3['config']; cleanup(): Promise<void> }>;
}

const variants: Variant[] = [
  { name: 'PGlite and directory store', setup: async () => ({ cleanup: async () => undefined }) },
  {
    name: 'Postgres and S3',
    setup: async () => {
      const db = `lpx_iso_${randomBytes(6).toString('hex')}`;
      const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${db}`);
      const s3 = await startS3();
      // The worker child process reads the S3 endpoint and credentials from the environment (the
      // stack reads the same variables, so they name the same store as the options below).
      Object.assign(process.env, {
        LORAPLEX_S3_ENDPOINT: s3.config.endpoint,
        LORAPLEX_S3_BUCKET: s3.config.bucket,
        AWS_REGION: s3.config.region,
      });
      const url = new URL(PG_ADMIN_URL);
      url.pathname = `/${db}`;
      return {
        databaseUrl: url.toString(),
        s3: s3.config,
        cleanup: async () => {
          await s3.close();
          await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
          await admin.end();
        },
      };
    },
  },
];

async function json(stack: Stack, key: string, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(stack.url + path, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

async function uploadZip(stack: Stack, key: string, name: string, fixture: string): Promise<any> {
  const dir = join(FIXTURES, 'adapters', fixture);
  const zip = writeZip(
    await Promise.all(ADAPTER_FILES.map(async (f) => ({ name: f, data: await readFile(join(dir, f)) }))),
  );
  const res = await fetch(`${stack.url}/v1/adapters?name=${name}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/zip' },
    body: new Uint8Array(zip),
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`upload ${name}: ${res.status} ${text}`);
  return JSON.parse(text);
}

describe.each(variants)('tenant isolation: $name', (variant) => {
  let stack: Stack;
  let dataDir: string;
  let cleanup: () => Promise<void>;
  const a = {
    tenantId: '',
    key: '',
    keyId: '',
    name: `alpha-${randomBytes(3).toString('hex')}`,
    adapterIds: [] as string[],
    uploadId: '',
    pendingName: `pending-${randomBytes(3).toString('hex')}`,
  };
  const b = { tenantId: '', key: '', keyId: '' };
  /** What B must never read: A's tenant id, adapter ids, storage prefixes, key id and upload id. */
  let secrets: string[];
  /** Identifiers of A that B will name. */
  let refs: string[];

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'lpx-isolation-'));
    const v = await variant.setup();
    cleanup = v.cleanup;
    stack = await startStack({
      workerCli: WORKER_CLI,
      model: join(FIXTURES, 'base'),
      servedModelName: BASE_MODEL,
      dataDir,
      port: await freePort(),
      workerPort: await freePort(),
      workerArgs: ['--backend', 'cpu', '--threads', '1', '--adapter-cache-dir', join(dataDir, 'worker-cache')],
      log: null,
      ...(v.databaseUrl ? { databaseUrl: v.databaseUrl } : {}),
      ...(v.s3 ? { s3: v.s3 } : {}),
    });
    for (const [who, name] of [
      [a, 'tenant-a'],
      [b, 'tenant-b'],
    ] as const) {
      const t = await json(stack, stack.adminKey, 'POST', '/v1/tenants', {
        name: `${name}-${randomBytes(3).toString('hex')}`,
      });
      const k = await json(stack, stack.adminKey, 'POST', '/v1/keys', {
        tenant_id: t.id,
        scopes: ['inference', 'adapters:write', 'admin'],
      });
      Object.assign(who, { tenantId: t.id, key: k.key, keyId: k.id });
    }
    // Two versions of one name, a second adapter, and a presigned upload left pending ('uploading').
    for (const fixture of ['lora_qv_r4', 'lora_all_r8'])
      a.adapterIds.push((await uploadZip(stack, a.key, a.name, fixture)).id);
    a.adapterIds.push((await uploadZip(stack, a.key, `${a.name}-two`, 'lora_qkvo_r16_rslora')).id);
    const files = await Promise.all(
      ADAPTER_FILES.map(async (f) => ({
        name: f,
        size: (await readFile(join(FIXTURES, 'adapters', 'lora_qv_r4', f))).length,
      })),
    );
    const up = await json(stack, a.key, 'POST', '/v1/adapters/uploads', {
      name: a.pendingName,
      base_model: BASE_MODEL,
      files,
    });
    a.uploadId = up.upload_id;
    const pending = (await json(stack, a.key, 'GET', `/v1/adapters/${a.pendingName}`)) as {
      id: string;
      status: string;
    };
    expect(pending.status).toBe('uploading');
    a.adapterIds.push(pending.id);

    const prefixes = a.adapterIds.map((id) => `adapters/${a.tenantId}/${id}/`);
    secrets = [a.tenantId, a.keyId, a.uploadId, ...a.adapterIds, ...prefixes];
    refs = [
      a.name,
      `${a.name}@1`,
      `${a.name}@2`,
      `${a.name}-two`,
      a.pendingName,
      `${a.pendingName}@1`,
      ...a.adapterIds,
      ...prefixes,
      `${prefixes[0]}adapter_model.safetensors`,
      `/${prefixes[0]}`,
      a.tenantId,
      a.keyId,
      a.uploadId,
    ];
  }, 240_000);

  afterAll(async () => {
    await stack?.close();
    await cleanup?.();
    await rm(dataDir, { recursive: true, force: true });
  }, 60_000);

  /** Every probe with every one of A's identifiers, against the same probe with a never-existing one. */
  async function probeEverything(): Promise<number> {
    let n = 0;
    const mismatches: string[] = [];
    for (const ref of refs) {
      const other = neverExisting(ref);
      const mine = probesFor(ref, BASE_MODEL);
      const theirs = probesFor(other, BASE_MODEL);
      // One identifier's probes at a time, all routes at once: the worker and database see concurrency too.
      const answers = await Promise.all(
        mine.map((p, i) => Promise.all([send(stack.url, b.key, p), send(stack.url, b.key, theirs[i]!)])),
      );
      answers.forEach(([got, want]: [Answer, Answer], i) => {
        n++;
        const label = `${mine[i]!.label} with ${ref}`;
        expect(got.status, label).toBeGreaterThanOrEqual(400);
        const g = normalise(got, ref);
        const w = normalise(want, other);
        if (JSON.stringify(g) !== JSON.stringify(w))
          mismatches.push(`${label}:\n  A's: ${JSON.stringify(g)}\n  new: ${JSON.stringify(w)}`);
        expect(leaked(g, secrets), label).toEqual([]);
      });
    }
    expect(mismatches, mismatches.join('\n')).toEqual([]);
    return n;
  }

  /** B's own views (lists, models, usage, keys) hold nothing of A's. */
  async function ownViewsAreClean(): Promise<void> {
    for (const path of [
      '/v1/adapters',
      '/v1/models',
      '/v1/usage?group_by=adapter',
      '/v1/usage?group_by=hour',
      '/v1/keys',
    ]) {
      const ans = await send(stack.url, b.key, { label: path, method: 'GET', path });
      expect(ans.status, path).toBe(200);
      expect(leaked(ans, [...secrets, a.name, a.pendingName]), path).toEqual([]);
    }
    const adapters = JSON.parse(
      (await send(stack.url, b.key, { label: 'list', method: 'GET', path: '/v1/adapters' })).text,
    ) as { data: unknown[] };
    const keys = JSON.parse(
      (await send(stack.url, b.key, { label: 'keys', method: 'GET', path: '/v1/keys' })).text,
    ) as { data: Array<{ id: string }> };
    expect(keys.data.map((k) => k.id)).toEqual([b.keyId]);
    expect(adapters.data.every((x) => !a.adapterIds.includes((x as { id: string }).id))).toBe(true);
    const tenants = await send(stack.url, b.key, { label: 'tenants', method: 'GET', path: '/v1/tenants' });
    expect(tenants.status).toBe(403);
    expect(leaked(tenants, [...secrets, a.name])).toEqual([]);
  }

  /** A's adapters and upload are untouched by everything B did (its DELETEs included). */
  async function aIsIntact(): Promise<void> {
    const list = (await json(stack, a.key, 'GET', '/v1/adapters')) as { data: Array<{ id: string }> };
    expect(list.data.map((x) => x.id).sort()).toEqual([...a.adapterIds].sort());
    const keys = (await json(stack, a.key, 'GET', '/v1/keys')) as {
      data: Array<{ id: string; revoked_at: string | null }>;
    };
    expect(keys.data).toEqual([expect.objectContaining({ id: a.keyId, revoked_at: null })]);
  }

  it("before A's adapter is hot: every refusal equals the one for a resource that never existed, and leaks nothing", async () => {
    const n = await probeEverything();
    expect(n).toBe(refs.length * probesFor('x', BASE_MODEL).length);
    await ownViewsAreClean();
    await aIsIntact();
  }, 120_000);

  it('after A generated with its adapters (hot on the worker): the same', async () => {
    for (const ref of [a.name, `${a.name}@1`, a.adapterIds[2]!]) {
      const out = await json(stack, a.key, 'POST', '/v1/completions', {
        model: ref,
        prompt: 'The license',
        max_tokens: 4,
        temperature: 0,
      });
      expect(out.choices[0].text.length).toBeGreaterThan(0);
      const lorax = await json(stack, a.key, 'POST', '/generate', {
        inputs: 'The license',
        parameters: { adapter_id: ref, max_new_tokens: 4 },
      });
      expect(lorax.generated_text.length).toBeGreaterThan(0);
    }
    await probeEverything();
    await ownViewsAreClean();
    await aIsIntact();
    // A LoRAX body with an OpenAI `model` field is refused by the API itself: a worker reads `model`
    // first, and answered a hot adapter id there differently from an unknown one.
    const smuggled = await send(
      stack.url,
      b.key,
      probesFor(a.adapterIds[2]!, BASE_MODEL).find((p) => p.label === 'generate with model field')!,
    );
    expect(smuggled.status).toBe(400);
    expect(JSON.parse(smuggled.text).error.code).toBe('unsupported_parameter');
    // B's own use of the shared worker works, and its answers carry nothing of A's.
    const base = await send(stack.url, b.key, {
      label: 'base',
      method: 'POST',
      path: '/v1/completions',
      json: { model: BASE_MODEL, prompt: 'The license', max_tokens: 4 },
    });
    expect(base.status).toBe(200);
    expect(leaked(base, secrets)).toEqual([]);
  }, 120_000);

  it("B uploading under A's adapter name gets its own version 1, serves its own weights, and A's adapter is unchanged", async () => {
    const mine = await uploadZip(stack, b.key, a.name, 'lora_qkvo_r16_rslora');
    expect(mine).toMatchObject({ name: a.name, version: 1, ref: `${a.name}@1` });
    expect(a.adapterIds).not.toContain(mine.id);
    const bOut = await json(stack, b.key, 'POST', '/v1/completions', {
      model: a.name,
      prompt: 'The license',
      max_tokens: 6,
      temperature: 0,
    });
    const aOut = await json(stack, a.key, 'POST', '/v1/completions', {
      model: a.name,
      prompt: 'The license',
      max_tokens: 6,
      temperature: 0,
    });
    // The same weights under another tenant's name give the same tokens as A's third adapter.
    const aThird = await json(stack, a.key, 'POST', '/v1/completions', {
      model: `${a.name}-two`,
      prompt: 'The license',
      max_tokens: 6,
      temperature: 0,
    });
    expect(bOut.choices[0].text).toBe(aThird.choices[0].text);
    expect(aOut.choices[0].text).not.toBe(aThird.choices[0].text);
    expect((await json(stack, a.key, 'GET', `/v1/adapters/${a.name}`)).version).toBe(2);
    const gone = await json(stack, b.key, 'DELETE', `/v1/adapters/${a.name}`);
    expect(gone.id).toBe(mine.id);
    await aIsIntact();
  }, 120_000);
});
