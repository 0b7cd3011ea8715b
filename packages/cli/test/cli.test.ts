// The `loraplex` CLI as a real process: help and usage errors, `generate` streaming from a real
// worker, API errors as exit code 1, and `loraplex worker` serving and draining.
import { spawn, spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Engine } from '@loraplex/engine';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, spawnWorker, type WorkerProcess } from '../../../apps/worker/test/helpers/process.js';
import { adaptersDir, modelDir } from '../../../apps/worker/test/helpers/http.js';

const CLI = resolve(fileURLToPath(import.meta.url), '../../dist/cli.js');
const run = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });

describe('help and usage errors', () => {
  it('prints help for the CLI and every command', () => {
    const top = run(['--help']);
    expect(top.status).toBe(0);
    for (const c of ['dev', 'worker', 'keys', 'tenants', 'adapters', 'generate']) expect(top.stdout).toContain(c);
    for (const c of ['dev', 'keys', 'tenants', 'adapters', 'generate']) {
      const r = run([c, '--help']);
      expect(r.status, c).toBe(0);
      expect(r.stdout, c).toMatch(/^usage: loraplex /);
    }
    expect(run(['dev', '--help']).stdout).toMatch(/TRAINED/);
  });

  it.each([
    [['nope'], /unknown command "nope"/],
    [['generate'], /missing argument/],
    [['generate', '--max-new-tokens', 'x', 'hi'], /--max-new-tokens must be an integer/],
    [['generate', '--frobnicate', 'hi'], /Unknown option '--frobnicate'/],
    [['adapters', 'upload', '/tmp'], /needs --name/],
    [['adapters', 'frob', 'x'], /unknown adapters command/],
    [['keys', 'revoke'], /needs a key id|missing argument/],
  ])('%j exits 2 with a clear message', (args, message) => {
    const r = run(args as string[]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message as RegExp);
  });
});

describe('against a real worker', () => {
  let worker: WorkerProcess;
  beforeAll(async () => {
    ensureBuilt();
    worker = await spawnWorker([
      '--model',
      modelDir('llama'),
      '--adapter-dir',
      adaptersDir('llama'),
      '--threads',
      '1',
      '--backend',
      'cpu',
    ]);
  });
  afterAll(async () => {
    worker?.child.kill('SIGTERM');
    await worker?.exited;
  });

  it("generate streams exactly the engine's greedy text", async () => {
    const engine = await Engine.load(modelDir('llama'), { backend: 'cpu', threads: 1 });
    await engine.loadAdapter('lora_all_r8', join(adaptersDir('llama'), 'lora_all_r8'));
    const [ref] = await engine.generate([
      { prompt: 'The license', adapter: 'lora_all_r8', sampling: { maxTokens: 8, temperature: 0 } },
    ]);
    await engine.close();
    const r = spawn(
      process.execPath,
      [CLI, 'generate', '--adapter', 'lora_all_r8', '--max-new-tokens', '8', 'The license'],
      { env: { ...process.env, LORAPLEX_BASE_URL: worker.url } },
    );
    let out = '',
      err = '';
    r.stdout.on('data', (d: Buffer) => (out += d.toString()));
    r.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((res) => r.on('exit', res));
    expect(code, err).toBe(0);
    // Incremental token texts: a trailing partial UTF-8 character stays out of the stream.
    expect(ref!.text.startsWith(out.replace(/\n$/, ''))).toBe(true);
    expect(err).toMatch(/prompt \+ 8 generated tokens|eos_token/);
  });

  it('an API error exits 1 with its type, status and message', () => {
    const r = run(['generate', '--base-url', worker.url, '--adapter', 'no-such-adapter', 'hi']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/NotFoundError \(HTTP 404\).*no-such-adapter/);
  });
});

describe('loraplex worker', () => {
  it('starts a worker on its own and drains on SIGTERM', async () => {
    const child = spawn(
      process.execPath,
      [CLI, 'worker', '--model', modelDir('llama'), '--port', '0', '--threads', '1', '--backend', 'cpu'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((res) => child.on('exit', res));
    const t0 = Date.now();
    while (!out.includes('"listening"')) {
      if (Date.now() - t0 > 30_000) throw new Error(`no listening line: ${out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const port = (JSON.parse(out.split('\n').find((l) => l.includes('"listening"'))!) as { port: number }).port;
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(out).toContain('"drained"');
  });
});
