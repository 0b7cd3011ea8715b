// lorax-client's contract through the API: the embedded stack (the API and a worker process) serves
// POST /, /generate and /generate_stream to a tenant key, and every answer and stream event parses
// with the client's models (apps/worker/test/helpers/lorax-client-models.ts): details on and off,
// adapter_id null, absent or the tenant's adapter, best_of, decoder_input_details,
// return_k_alternatives; /info and /tokenize; adapter_source as the API defines it.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack } from '../src/stack.js';
import { writeZip } from './helpers/archive.js';
import { FIXTURES } from './helpers/setup.js';
import { freePort, sseData } from '../../worker/test/helpers/http.js';
import {
  asClient,
  clientBody,
  clientInfo,
  clientResponse,
  clientStreamResponse,
  clientTokenizeResponse,
} from '../../worker/test/helpers/lorax-client-models.js';
import { CLI as WORKER_CLI } from '../../worker/test/helpers/process.js';

let dataDir: string;
let stack: Awaited<ReturnType<typeof startStack>>;
let key: string;

const post = (path: string, body: unknown): Promise<Response> =>
  fetch(`${stack.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'lpx-lorax-'));
  stack = await startStack({
    workerCli: WORKER_CLI,
    model: join(FIXTURES, 'base'),
    servedModelName: 'tiny-llama',
    dataDir,
    port: await freePort(),
    workerPort: await freePort(),
    workerArgs: ['--backend', 'cpu', '--threads', '1'],
    log: null,
  });
  const admin = { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' };
  const tenant = await (
    await fetch(`${stack.url}/v1/tenants`, { method: 'POST', headers: admin, body: JSON.stringify({ name: 'lorax' }) })
  ).json();
  key = (
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
}, 240_000);

afterAll(async () => {
  await stack?.close();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

async function generated(path: '/' | '/generate', body: Record<string, unknown>) {
  const r = await post(path, body);
  const payload = await r.json();
  expect(r.status, JSON.stringify(payload)).toBe(200);
  if (path === '/') expect(Array.isArray(payload)).toBe(true);
  return asClient(clientResponse, path === '/' ? (payload as unknown[])[0] : payload);
}

async function streamed(path: '/' | '/generate_stream', body: Record<string, unknown>) {
  const r = await post(path, body);
  expect(r.status).toBe(200);
  return sseData(await r.text()).map((e) => asClient(clientStreamResponse, e));
}

describe('LoRAX through the API parses with lorax-client models', () => {
  for (const adapter of [undefined, null, 'qv'] as const) {
    for (const details of [true, false]) {
      const label = `adapter_id ${adapter === undefined ? 'absent' : String(adapter)}, details ${details}`;
      const body = (stream: boolean): Record<string, unknown> => {
        const b = clientBody('Hello world', stream, { details, max_new_tokens: 3 });
        const p = b.parameters as Record<string, unknown>;
        if (adapter === undefined) delete p.adapter_id;
        else p.adapter_id = adapter;
        return b;
      };
      it(`POST /, /generate, POST / streamed and /generate_stream (${label})`, async () => {
        const a = await generated('/', body(false));
        const g = await generated('/generate', body(false));
        expect(a.generated_text).toBe(g.generated_text);
        if (details) expect(g.details).toMatchObject({ generated_tokens: 3, skipped_tokens: 0 });
        else expect(g.details ?? null).toBeNull();
        for (const path of ['/', '/generate_stream'] as const) {
          const events = await streamed(path, body(true));
          expect(events).toHaveLength(3);
          expect(events.at(-1)!.generated_text).toBe(g.generated_text);
          // The API forces details on to meter the stream and takes them off again when not asked.
          if (details) expect(events.at(-1)!.details).toMatchObject({ generated_tokens: 3 });
          else expect(events.at(-1)!.details ?? null).toBeNull();
        }
      });
    }
  }

  it('best_of, decoder_input_details and return_k_alternatives', async () => {
    const r = await generated(
      '/',
      clientBody('Hello world', false, {
        best_of: 2,
        do_sample: true,
        decoder_input_details: true,
        return_k_alternatives: 2,
        max_new_tokens: 3,
      }),
    );
    expect(r.details!.best_of_sequences).toHaveLength(1);
    expect(r.details!.prefill).toHaveLength(r.details!.prompt_tokens);
    for (const t of r.details!.tokens) expect(t.alternative_tokens).toHaveLength(2);
  });

  it('adapter_source: "local" is the tenant\'s adapters; hub, s3 and pbase are a 400 that says what to do', async () => {
    await generated('/', clientBody('Hello', false, { adapter_id: 'qv', adapter_source: 'local', max_new_tokens: 1 }));
    for (const src of ['hub', 's3', 'pbase']) {
      const r = await post('/', clientBody('Hello', false, { adapter_id: 'qv', adapter_source: src }));
      expect(r.status).toBe(400);
      expect(((await r.json()) as { error: { message: string } }).error.message).toMatch(
        new RegExp(`adapter_source "${src}" is not served by this API.*upload it`),
      );
    }
  });

  it('GET /info and POST /tokenize', async () => {
    const info = await fetch(`${stack.url}/info`, { headers: { authorization: `Bearer ${key}` } });
    expect(info.status).toBe(200);
    expect(asClient(clientInfo, await info.json())).toMatchObject({ model_id: 'tiny-llama', max_total_tokens: 256 });
    expect((await fetch(`${stack.url}/info`)).status).toBe(401);
    const tk = await post('/tokenize', { inputs: 'Hello world' });
    expect(tk.status).toBe(200);
    const tokens = asClient(clientTokenizeResponse, await tk.json());
    expect(tokens.length).toBeGreaterThan(1);
    for (const t of tokens) expect(t.text).toBe('Hello world'.slice(t.start, t.stop));
  });
});
