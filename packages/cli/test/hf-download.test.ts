// The Hugging Face Hub download of `loraplex dev --model org/name`, against a local HTTP server
// standing in for the Hub through HF_ENDPOINT (as huggingface_hub allows), serving the fixture
// model's real files.
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { modelDir } from '../../../apps/worker/test/helpers/http.js';
import { downloadHubModel } from '../src/hf-download.js';

const MODEL = modelDir('llama');

describe('downloadHubModel', () => {
  let hub: { url: string; close: () => Promise<void>; requests: Array<{ path: string; auth: string | undefined }> };
  let cache: string;
  beforeAll(async () => {
    cache = mkdtempSync(join(tmpdir(), 'loraplex-hf-'));
    const requests: Array<{ path: string; auth: string | undefined }> = [];
    const server = createServer((req, res) => {
      requests.push({ path: req.url!, auth: req.headers.authorization });
      const m = /^\/([^/]+\/[^/]+)\/resolve\/main\/(.+)$/.exec(req.url!);
      if (m?.[1] === 'acme/sharded' && m[2] === 'model.safetensors.index.json')
        return void res
          .writeHead(200)
          .end(JSON.stringify({ weight_map: { 'model.embed_tokens.weight': '../../../escape.safetensors' } }));
      if (m?.[1] === 'acme/gated' && req.headers.authorization !== 'Bearer hf_secret')
        return void res.writeHead(401).end();
      if (!m || !['acme/tiny', 'acme/gated', 'acme/sharded'].includes(m[1]!)) return void res.writeHead(404).end();
      try {
        const body = readFileSync(join(MODEL, decodeURIComponent(m[2]!)));
        res.writeHead(200, { 'content-length': String(body.length) }).end(body);
      } catch {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    hub = {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      requests,
      close: () => new Promise((r) => server.close(() => r())),
    };
  });
  afterAll(async () => {
    await hub?.close();
    rmSync(cache, { recursive: true, force: true });
  });

  const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');

  it('fetches the model files once into the cache, byte for byte', async () => {
    const logs: string[] = [];
    const dir = await downloadHubModel('acme/tiny', {
      env: { HF_ENDPOINT: hub.url },
      cacheDir: cache,
      log: (l) => logs.push(l),
    });
    expect(dir).toBe(join(cache, 'hf', 'acme--tiny@main'));
    const files = readdirSync(dir).sort();
    expect(files).toEqual(expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.json']));
    for (const f of files) expect(sha(join(dir, f)), f).toBe(sha(join(MODEL, f)));
    expect(logs.some((l) => l.startsWith('downloading acme/tiny/model.safetensors'))).toBe(true);
    const before = hub.requests.length;
    await downloadHubModel('acme/tiny', { env: { HF_ENDPOINT: hub.url }, cacheDir: cache, log: () => undefined });
    // Cached files are not fetched again; only the optional ones the model lacks are asked for.
    expect(
      hub.requests
        .slice(before)
        .map((r) => r.path)
        .filter((p) => /config\.json$|model\.safetensors$|tokenizer\.json$/.test(p)),
    ).toEqual([]);
  });

  it('sends HF_TOKEN, explains a gated model without it, and refuses a bad id', async () => {
    await expect(
      downloadHubModel('acme/gated', { env: { HF_ENDPOINT: hub.url }, cacheDir: cache, log: () => undefined }),
    ).rejects.toThrow(/401.*set HF_TOKEN/);
    const dir = await downloadHubModel('acme/gated', {
      env: { HF_ENDPOINT: hub.url, HF_TOKEN: 'hf_secret' },
      cacheDir: cache,
      log: () => undefined,
    });
    expect(readdirSync(dir)).toContain('model.safetensors');
    await expect(
      downloadHubModel('../../etc', { env: { HF_ENDPOINT: hub.url }, cacheDir: cache, log: () => undefined }),
    ).rejects.toThrow(/not a Hugging Face model id/);
    await expect(
      downloadHubModel('acme/missing', { env: { HF_ENDPOINT: hub.url }, cacheDir: cache, log: () => undefined }),
    ).rejects.toThrow(/HTTP 404/);
    expect(readdirSync(join(cache, 'hf')).some((n) => n.includes('.part-'))).toBe(false);
  });

  it('refuses a shard index whose file names leave the cache directory', async () => {
    await expect(
      downloadHubModel('acme/sharded', { env: { HF_ENDPOINT: hub.url }, cacheDir: cache, log: () => undefined }),
    ).rejects.toThrow(/not a plain .safetensors file name/);
    expect(readdirSync(cache)).not.toContain('escape.safetensors');
  });
});
