// vLLM and NIM conventions on the worker (issue 12 point 3): vLLM's LoRA flags as aliases and NIM's
// environment variables as defaults; /v1/load_lora_adapter and /v1/unload_lora_adapter (standalone only,
// paths inside --adapter-dir); stop_reason in choices; vLLM's /tokenize and /detokenize next to LoRAX's;
// NeMo adapters listed with the reason they are not served.
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCli } from '../src/args.js';
import { createWorker, type Worker } from '../src/worker.js';
import { adaptersDir, modelDir, platformPoster, poster } from './helpers/http.js';

describe('vLLM flags and NIM environment variables', () => {
  it('maps vLLM LoRA flags onto the worker options', () => {
    const o = parseCli(
      [
        '--model',
        '/m',
        '--enable-lora',
        '--max-loras',
        '3',
        '--max-cpu-loras',
        '12',
        '--max-lora-rank',
        '32',
        '--lora-modules',
        'a=/p/a',
        '{"name": "b", "path": "/p/b", "base_model_name": "/m"}',
        '--lora-modules',
        'c=/p/c=d',
        '--api-key',
        'k',
      ],
      {},
    );
    expect(o).toMatchObject({ maxAdapters: 3, hostCacheAdapters: 12, maxLoraRank: 32, apiKey: 'k' });
    expect(o.loraModules).toEqual([
      { name: 'a', path: '/p/a' },
      { name: 'c', path: '/p/c=d' },
      { name: 'b', path: '/p/b' },
    ]);
    expect(o.allowRuntimeLoraUpdating).toBeUndefined();
  });

  it('refuses disagreeing aliases, bad modules and stray arguments', () => {
    expect(() => parseCli(['--model', '/m', '--max-loras', '2', '--max-adapters', '3'], {})).toThrow(/disagree/);
    expect(parseCli(['--model', '/m', '--max-loras', '2', '--max-adapters', '2'], {}).maxAdapters).toBe(2);
    expect(() => parseCli(['--model', '/m', '--lora-modules', 'nopath'], {})).toThrow(/NAME=PATH/);
    expect(() => parseCli(['--model', '/m', '--lora-modules', '{"name": "x"}'], {})).toThrow(/"path"/);
    expect(() => parseCli(['--model', '/m', '--enable-lora', 'stray'], {})).toThrow(/unexpected argument stray/);
  });

  it('reads NIM variables as defaults; flags win', () => {
    const env = {
      LOCAL_PEFT_DIRECTORY: '/loras',
      NIM_PEFT_REFRESH_INTERVAL: '30',
      NIM_MAX_GPU_LORAS: '4',
      NIM_MAX_CPU_LORAS: '16',
      NIM_MAX_LORA_RANK: '64',
    };
    expect(parseCli(['--model', '/m'], env)).toMatchObject({
      adapterDir: '/loras',
      adapterRefreshInterval: 30,
      maxAdapters: 4,
      hostCacheAdapters: 16,
      maxLoraRank: 64,
    });
    const flags = parseCli(
      ['--model', '/m', '--adapter-dir', '/d', '--adapter-refresh-interval', '5', '--max-loras', '1'],
      env,
    );
    expect(flags).toMatchObject({ adapterDir: '/d', adapterRefreshInterval: 5, maxAdapters: 1 });
    expect(parseCli(['--model', '/m', '--max-cpu-loras', '2', '--max-lora-rank', '8'], env)).toMatchObject({
      hostCacheAdapters: 2,
      maxLoraRank: 8,
    });
    // An S3 source given on the command line is not joined by the environment's directory.
    expect(parseCli(['--model', '/m', '--adapter-s3', 's3://b/p/'], env).adapterDir).toBeUndefined();
    expect(() => parseCli(['--model', '/m'], { NIM_MAX_GPU_LORAS: 'many' })).toThrow(/--max-adapters/);
  });

  it('VLLM_ALLOW_RUNTIME_LORA_UPDATING or --allow-runtime-lora-updating turns runtime updates on', () => {
    expect(parseCli(['--model', '/m'], { VLLM_ALLOW_RUNTIME_LORA_UPDATING: 'True' }).allowRuntimeLoraUpdating).toBe(
      true,
    );
    expect(parseCli(['--model', '/m'], { VLLM_ALLOW_RUNTIME_LORA_UPDATING: '1' }).allowRuntimeLoraUpdating).toBe(true);
    expect(parseCli(['--model', '/m'], { VLLM_ALLOW_RUNTIME_LORA_UPDATING: 'no' }).allowRuntimeLoraUpdating).toBe(
      undefined,
    );
    const o = parseCli(
      ['--model', '/m', '--allow-runtime-lora-updating', '--allow-lora-paths-outside-adapter-dir'],
      {},
    );
    expect(o).toMatchObject({ allowRuntimeLoraUpdating: true, allowLoraPathsOutsideAdapterDir: true });
  });
});

let tmp: string;
let dir: string;
let worker: Worker;
let post: ReturnType<typeof poster>;
let client: OpenAI;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'lp-worker-vllm-'));
  dir = join(tmp, 'adapters');
  mkdirSync(dir);
  symlinkSync(join(adaptersDir('llama'), 'lora_qv_r4'), join(dir, 'lora_qv_r4'));
  // Not listed by the directory scan (no adapter_config.json at the top): loaded at run time below.
  cpSync(join(adaptersDir('llama'), 'lora_all_r8'), join(dir, 'runtime', 'extra'), { recursive: true });
  writeFileSync(join(dir, 'nemo_file.nemo'), 'not a tarball');
  mkdirSync(join(dir, 'nemo_dir'));
  writeFileSync(join(dir, 'nemo_dir', 'adapter.nemo'), 'not a tarball');
  worker = await createWorker({
    model: modelDir('llama'),
    servedModelName: 'tiny-llama',
    adapterDir: dir,
    loraModules: [{ name: 'static-rs', path: join(adaptersDir('llama'), 'lora_qkvo_r16_rslora') }],
    allowRuntimeLoraUpdating: true,
    backend: 'cpu',
    threads: 1,
    maxAdapters: 2,
    maxBatchTokens: 64,
  });
  const fetcher = (p: string, init?: RequestInit) => worker.app.request(p, init);
  post = poster(fetcher);
  client = new OpenAI({
    baseURL: 'http://worker/v1',
    apiKey: 'unused',
    maxRetries: 0,
    fetch: (url: string | URL | Request, init?: RequestInit) =>
      Promise.resolve(worker.app.request(String(url).replace('http://worker', ''), init)),
  });
});

afterAll(async () => {
  await worker?.shutdown();
  rmSync(tmp, { recursive: true, force: true });
});

const modelIds = async (): Promise<string[]> => {
  const ids: string[] = [];
  for await (const m of client.models.list()) ids.push(m.id);
  return ids;
};

describe('--lora-modules and NeMo adapters', () => {
  it('serves --lora-modules adapters by name and lists NeMo adapters as unsupported, with the reason', async () => {
    const all = (await (await worker.app.request('/v1/models')).json()) as { data: Array<Record<string, unknown>> };
    expect(all.data.map((m) => m.id)).toEqual(['tiny-llama', 'static-rs', 'lora_qv_r4', 'nemo_dir', 'nemo_file']);
    for (const id of ['nemo_dir', 'nemo_file']) {
      const card = all.data.find((m) => m.id === id)!;
      expect(card).toMatchObject({ status: 'unsupported', parent: 'tiny-llama' });
      expect(card.error).toMatch(/NeMo-format adapter \(\.nemo\).*PEFT/);
    }
    const r = await client.completions.create({ model: 'static-rs', prompt: 'Hello', max_tokens: 2, temperature: 0 });
    expect(r.choices[0]!.text.length).toBeGreaterThan(0);
    const refused = await post('/v1/completions', { model: 'nemo_file', prompt: 'Hello', max_tokens: 2 });
    expect(refused.status).toBe(404);
    expect(((await refused.json()) as { error: { message: string } }).error.message).toMatch(/not served: NeMo/);
  });
});

describe('runtime LoRA updating', () => {
  const load = (body: unknown) => post('/v1/load_lora_adapter', body);
  const unload = (body: unknown) => post('/v1/unload_lora_adapter', body);

  it('loads, serves, refuses a second load, unloads, and then 404s (vLLM texts and codes)', async () => {
    const r = await load({ lora_name: 'extra', lora_path: join(dir, 'runtime', 'extra') });
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("Success: LoRA adapter 'extra' added successfully.");
    expect(await modelIds()).toContain('extra');
    const out = await client.completions.create({ model: 'extra', prompt: 'Hello', max_tokens: 3, temperature: 0 });
    expect(out.model).toBe('extra');

    const again = await load({ lora_name: 'extra', lora_path: 'runtime/extra' });
    expect(again.status).toBe(400);
    expect(((await again.json()) as { error: { message: string } }).error.message).toBe(
      "The lora adapter 'extra' has already been loaded.",
    );

    const u = await unload({ lora_name: 'extra' });
    expect(u.status).toBe(200);
    expect(await u.text()).toBe("Success: LoRA adapter 'extra' removed successfully.");
    expect(await modelIds()).not.toContain('extra');
    await expect(client.completions.create({ model: 'extra', prompt: 'Hello', max_tokens: 1 })).rejects.toMatchObject({
      status: 404,
    });
    const gone = await unload({ lora_name: 'extra' });
    expect(gone.status).toBe(404);
    expect(((await gone.json()) as { error: { message: string } }).error.message).toBe(
      "The lora adapter 'extra' cannot be found.",
    );

    // A relative path is taken from --adapter-dir.
    expect((await load({ lora_name: 'extra2', lora_path: 'runtime/extra' })).status).toBe(200);
    expect((await unload({ lora_name: 'extra2' })).status).toBe(200);
  });

  it('refuses missing fields, paths outside --adapter-dir, non-adapters and directory adapters', async () => {
    const message = async (r: Response, status: number): Promise<string> => {
      expect(r.status).toBe(status);
      return ((await r.json()) as { error: { message: string } }).error.message;
    };
    expect(await message(await load({ lora_name: 'x' }), 400)).toBe(
      "Both 'lora_name' and 'lora_path' must be provided.",
    );
    expect(await message(await unload({}), 400)).toBe("'lora_name' needs to be provided to unload a LoRA adapter.");
    const outside = join(adaptersDir('llama'), 'lora_all_r8');
    expect(await message(await load({ lora_name: 'x', lora_path: outside }), 400)).toMatch(
      /is not inside the adapter directory/,
    );
    expect(await message(await load({ lora_name: 'x', lora_path: '../../etc' }), 400)).toMatch(/not inside/);
    expect(await message(await load({ lora_name: 'x', lora_path: 'runtime' }), 404)).toBe(
      `Loading lora x failed: No adapter found for runtime`,
    );
    expect(await message(await load({ lora_name: '../x', lora_path: 'runtime/extra' }), 400)).toMatch(/not a valid/);
    expect(await message(await unload({ lora_name: 'lora_qv_r4' }), 400)).toMatch(/adapter directory/);
    // --lora-modules adapters unload as vLLM's static ones do.
    expect((await unload({ lora_name: 'static-rs' })).status).toBe(200);
    expect(await modelIds()).not.toContain('static-rs');
  });

  it('is off (404) without the flag, and always off in platform mode', async () => {
    const secret = 'worker-secret';
    const platform = await createWorker({
      model: modelDir('llama'),
      adapterDir: dir,
      allowRuntimeLoraUpdating: true,
      workerSecret: secret,
      backend: 'cpu',
      threads: 1,
    });
    const plain = await createWorker({ model: modelDir('llama'), adapterDir: dir, backend: 'cpu', threads: 1 });
    try {
      const signed = platformPoster((p, init) => platform.app.request(p, init), secret);
      const body = { lora_name: 'extra', lora_path: join(dir, 'runtime', 'extra') };
      expect((await signed('/v1/load_lora_adapter', body)).status).toBe(404);
      expect((await signed('/v1/unload_lora_adapter', { lora_name: 'extra' })).status).toBe(404);
      const off = poster((p, init) => plain.app.request(p, init));
      expect((await off('/v1/load_lora_adapter', body)).status).toBe(404);
    } finally {
      await platform.shutdown();
      await plain.shutdown();
    }
  });
});

describe('stop_reason', () => {
  it('is the stop string, the stop token id, or null for length (plain and streamed)', async () => {
    const gen = (await (
      await post('/generate', { inputs: 'Hello world', parameters: { max_new_tokens: 6, details: true } })
    ).json()) as { generated_text: string; details: { tokens: Array<{ id: number }> } };
    const ids = gen.details.tokens.map((t) => t.id);

    const length = await client.completions.create({
      model: 'tiny-llama',
      prompt: 'Hello world',
      max_tokens: 2,
      temperature: 0,
    });
    expect(length.choices[0]).toMatchObject({ finish_reason: 'length', stop_reason: null });

    const stopId = ids[2]!;
    const byToken = await client.completions.create({
      model: 'tiny-llama',
      prompt: 'Hello world',
      max_tokens: 6,
      temperature: 0,
      // @ts-expect-error vLLM's extension
      stop_token_ids: [stopId],
    });
    expect(byToken.choices[0]).toMatchObject({ finish_reason: 'stop', stop_reason: stopId });

    const text = gen.generated_text;
    expect(text.length).toBeGreaterThanOrEqual(3);
    const stop = text.slice(1, 3);
    const chat = await post('/v1/completions', { prompt: 'Hello world', max_tokens: 6, temperature: 0, stop: [stop] });
    const body = (await chat.json()) as { choices: Array<Record<string, unknown>> };
    expect(body.choices[0]).toMatchObject({ finish_reason: 'stop', stop_reason: stop });

    const stream = await client.completions.create({
      model: 'tiny-llama',
      prompt: 'Hello world',
      max_tokens: 6,
      temperature: 0,
      stop: [stop],
      stream: true,
    });
    const last: Array<Record<string, unknown>> = [];
    for await (const ch of stream) if (ch.choices[0]?.finish_reason) last.push(ch.choices[0] as never);
    expect(last).toEqual([expect.objectContaining({ finish_reason: 'stop', stop_reason: stop })]);
  });

  it('chat completions carry it too', async () => {
    const r = await client.chat.completions.create({
      model: 'tiny-llama',
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 2,
      temperature: 0,
      // @ts-expect-error vLLM's extension
      ignore_eos: true,
    });
    expect(r.choices[0]).toMatchObject({ finish_reason: 'length', stop_reason: null });
    const s = await client.chat.completions.create({
      model: 'tiny-llama',
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 2,
      temperature: 0,
      stream: true,
    });
    const ends: unknown[] = [];
    for await (const ch of s) if (ch.choices[0]?.finish_reason) ends.push(ch.choices[0]);
    expect(ends).toHaveLength(1);
    expect(ends[0]).toHaveProperty('stop_reason');
  });
});

describe('/tokenize and /detokenize', () => {
  it("vLLM's shapes round-trip; LoRAX's /tokenize still answers its own shape", async () => {
    const t = (await (await post('/tokenize', { prompt: 'Hello world', add_special_tokens: false })).json()) as {
      count: number;
      max_model_len: number;
      tokens: number[];
    };
    expect(t.count).toBe(t.tokens.length);
    expect(t.count).toBeGreaterThan(0);
    expect(t.max_model_len).toBe(worker.engine.config.maxPositions);
    const withBos = (await (await post('/tokenize', { prompt: 'Hello world' })).json()) as { count: number };
    expect(withBos.count).toBeGreaterThanOrEqual(t.count);
    const d = (await (await post('/detokenize', { tokens: t.tokens })).json()) as { prompt: string };
    expect(d.prompt).toBe('Hello world');

    const chat = (await (
      await post('/tokenize', { model: 'lora_qv_r4', messages: [{ role: 'user', content: 'Hello world' }] })
    ).json()) as { count: number; tokens: number[] };
    expect(chat.count).toBeGreaterThan(t.count);

    const lorax = (await (await post('/tokenize', { inputs: 'Hello world' })).json()) as unknown[];
    expect(Array.isArray(lorax)).toBe(true);
    expect((await post('/tokenize', { prompt: 'x', model: 'nope' })).status).toBe(404);
    expect((await post('/detokenize', { tokens: [10 ** 9] })).status).toBe(400);
  });
});
