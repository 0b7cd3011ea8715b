// adapter_source "hub" on a worker started with --allow-hub-adapters, against a local stand-in for
// the Hugging Face Hub (nothing leaves the machine): the repository's adapter is fetched once into
// the disk cache and answers as the same adapter from --adapter-dir does; a repository without an
// adapter is a 404; adapter_source local and null still name the directory's adapters.
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hubAdapterName } from '../src/adapters/hub-source.js';
import { parseCli } from '../src/args.js';
import { createWorker, type Worker } from '../src/worker.js';
import { adaptersDir, modelDir, poster } from './helpers/http.js';
import { asClient, clientBody, clientResponse } from './helpers/lorax-client-models.js';

let tmp: string;
let hub: Server;
let hubUrl: string;
const hubRequests: string[] = [];
let worker: Worker;
let post: ReturnType<typeof poster>;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'lp-worker-hub-'));
  // The stand-in Hub: /some-org/qv/resolve/main/<file> serves the fixture adapter lora_qv_r4.
  hub = createServer((req, res) => {
    hubRequests.push(`${req.method} ${req.url}`);
    const m = /^\/some-org\/qv\/resolve\/main\/(adapter_config\.json|adapter_model\.safetensors)$/.exec(req.url ?? '');
    if (!m) {
      res.writeHead(404).end();
      return;
    }
    void readFile(join(adaptersDir('llama'), 'lora_qv_r4', m[1]!)).then((data) => {
      res.writeHead(200, { 'content-length': String(data.length) });
      res.end(req.method === 'HEAD' ? undefined : data);
    });
  });
  await new Promise<void>((r) => hub.listen(0, '127.0.0.1', () => r()));
  hubUrl = `http://127.0.0.1:${(hub.address() as { port: number }).port}`;
  const dir = join(tmp, 'adapters');
  mkdirSync(dir);
  symlinkSync(join(adaptersDir('llama'), 'lora_qv_r4'), join(dir, 'lora_qv_r4'));
  worker = await createWorker({
    model: modelDir('llama'),
    servedModelName: 'tiny-llama',
    adapterDir: dir,
    adapterCacheDir: join(tmp, 'cache'),
    allowHubAdapters: true,
    hubEndpoint: hubUrl,
    backend: 'cpu',
    threads: 1,
    maxAdapters: 2,
    maxBatchTokens: 64,
  });
  post = poster((p, init) => worker.app.request(p, init));
});

afterAll(async () => {
  await worker?.shutdown();
  await new Promise<void>((r) => (hub ? hub.close(() => r()) : r()));
  rmSync(tmp, { recursive: true, force: true });
});

describe('adapter_source "hub" with --allow-hub-adapters', () => {
  it('the flag parses', () => {
    expect(parseCli(['--model', 'm', '--allow-hub-adapters']).allowHubAdapters).toBe(true);
    expect(parseCli(['--model', 'm']).allowHubAdapters).toBeUndefined();
  });

  it("fetches the repository's adapter once and serves it like the same adapter from --adapter-dir", async () => {
    const ask = async (over: Record<string, unknown>) => {
      const r = await post('/', clientBody('Hello world', false, { max_new_tokens: 5, ...over }));
      const body = await r.json();
      expect(r.status, JSON.stringify(body)).toBe(200);
      return { res: r, body: asClient(clientResponse, (body as unknown[])[0]) };
    };
    const local = await ask({ adapter_id: 'lora_qv_r4', adapter_source: 'local' });
    const fromHub = await ask({ adapter_id: 'some-org/qv', adapter_source: 'hub' });
    expect(fromHub.body.generated_text).toBe(local.body.generated_text);
    expect(fromHub.res.headers.get('x-adapter-source')).toBe('hub');
    expect(fromHub.res.headers.get('x-adapter-id')).toBe(hubAdapterName('some-org/qv'));
    const gets = (): number => hubRequests.filter((r) => r.startsWith('GET ')).length;
    expect(gets()).toBe(2);
    await ask({ adapter_id: 'some-org/qv', adapter_source: 'hub' });
    expect(gets()).toBe(2); // registered and cached: not fetched again
  });

  it('a repository without an adapter, or a name that is no repository id, is a 404', async () => {
    for (const id of ['some-org/missing', '../etc', 'a/b/c']) {
      const r = await post('/', clientBody('Hello', false, { adapter_id: id, adapter_source: 'hub' }));
      expect(r.status).toBe(404);
      expect(((await r.json()) as { error: string }).error).toMatch(/adapter_source "hub"/);
    }
  });
});
