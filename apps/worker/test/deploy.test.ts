// The trees the images ship: `pnpm deploy --prod` of the worker and of the API (the step of
// infra/docker/*.Dockerfile), made from the built workspace into temporary folders, offline (from the
// store `pnpm install` filled). The worker's tree must hold the engine's native addon and serve a
// completion on the fixture model; the API's must start on the embedded defaults and serve /health,
// /ready and Swagger UI with its own assets. Only the processes started here are stopped.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { modelDir, REPO } from './helpers/http.js';

const ADDON = join('node_modules', '@loraplex', 'engine', 'build', 'Release', 'loraplex_native.node');

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function start(command: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv }): Started {
  const child = spawn(command, args, {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  return { child, output: () => out, exited };
}

/** Resolves with the first match of `pattern` in the process's output; rejects if it exits first. */
function waitFor(p: Started, pattern: RegExp, what: string, timeoutMs: number): Promise<RegExpMatchArray> {
  return new Promise((res, rej) => {
    const timer = setTimeout(
      () => rej(new Error(`${what}: nothing within ${timeoutMs} ms:\n${p.output()}`)),
      timeoutMs,
    );
    const check = (): void => {
      const m = p.output().match(pattern);
      if (m) {
        clearTimeout(timer);
        res(m);
      }
    };
    p.child.stdout!.on('data', check);
    p.child.stderr!.on('data', check);
    check();
    void p.exited.then((code) => {
      clearTimeout(timer);
      rej(new Error(`${what}: exited with ${code}:\n${p.output()}`));
    });
  });
}

async function run(command: string, args: string[], cwd: string): Promise<void> {
  const p = start(command, args, { cwd });
  const code = await p.exited;
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${code}:\n${p.output()}`);
}

/** `pnpm deploy` as the Dockerfiles run it, but offline: everything comes from the workspace's store. */
const deploy = (pkg: string, dir: string): Promise<void> =>
  run('pnpm', ['--offline', 'deploy', '--filter', pkg, '--prod', dir], REPO);

async function stop(p: Started | undefined): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 10_000);
  await p.exited;
  clearTimeout(t);
}

let tmp: string;
let worker: Started | undefined;
let api: Started | undefined;
let workerUrl: string;
let apiUrl: string;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'lp-deploy-'));
  await Promise.all([deploy('@loraplex/worker', join(tmp, 'worker')), deploy('@loraplex/api', join(tmp, 'api'))]);
  if (!existsSync(join(tmp, 'worker', ADDON))) throw new Error(`the deployed worker has no native addon (${ADDON})`);
  worker = start(
    process.execPath,
    [
      'dist/cli.js',
      '--model',
      modelDir('llama'),
      '--served-model-name',
      'tiny',
      '--backend',
      'cpu',
      '--threads',
      '1',
      '--port',
      '0',
    ],
    {
      cwd: join(tmp, 'worker'),
      // The deployed tree's own addon, whatever the test run points the engine at.
      env: { LORAPLEX_NATIVE_ADDON: '', LORAPLEX_WORKER_SECRET: '', LORAPLEX_API_KEY: '', VLLM_API_KEY: '' },
    },
  );
  api = start(process.execPath, ['dist/cli.js', 'serve'], {
    cwd: join(tmp, 'api'),
    env: {
      PORT: '0',
      HOST: '127.0.0.1',
      LORAPLEX_DATA_DIR: join(tmp, 'api-data'),
      LORAPLEX_WORKER_SECRET: 'deploy-test-secret',
      DATABASE_URL: '',
    },
  });
  const [w, a] = await Promise.all([
    waitFor(worker, /"event":"listening","port":(\d+)/, 'the deployed worker', 90_000),
    waitFor(api, /listening on (http:\/\/[\d.]+:\d+)/, 'the deployed API', 90_000),
  ]);
  workerUrl = `http://127.0.0.1:${w[1]}`;
  apiUrl = a[1]!;
}, 240_000);

afterAll(async () => {
  await Promise.all([stop(worker), stop(api)]);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}, 30_000);

describe('the deployed worker (pnpm deploy --prod)', () => {
  it('ships the built addon in a copy of the engine, not a link into the workspace', () => {
    expect(existsSync(join(tmp, 'worker', ADDON))).toBe(true);
    const engine = realpathSync(join(tmp, 'worker', 'node_modules', '@loraplex', 'engine'));
    expect(engine.startsWith(realpathSync(tmp))).toBe(true);
    expect(existsSync(join(engine, 'dist', 'index.js'))).toBe(true);
  });

  it('serves a completion on the fixture model', async () => {
    const r = await fetch(`${workerUrl}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny', prompt: 'Hello', max_tokens: 4, temperature: 0, ignore_eos: true }),
    });
    expect(r.status).toBe(200);
    const body = (await r.json()) as { usage: { completion_tokens: number }; choices: Array<{ text: string }> };
    expect(body.usage.completion_tokens).toBe(4);
    expect(typeof body.choices[0]!.text).toBe('string');
    expect((await fetch(`${workerUrl}/ready`)).status).toBe(200);
  });
});

describe('the deployed API (pnpm deploy --prod)', () => {
  it('serves /health, and /ready says why it is not ready (no worker)', async () => {
    const health = await fetch(`${apiUrl}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${apiUrl}/ready`);
    expect(ready.status).toBe(503);
    expect(((await ready.json()) as { reasons: string[] }).reasons).toEqual([
      'no healthy worker: no worker has sent a recent heartbeat',
    ]);
  });

  it('serves Swagger UI with its assets from the deployed tree', async () => {
    const html = await (await fetch(`${apiUrl}/docs`)).text();
    const js = html.match(/src="([^"]+\.js)"/)![1]!;
    const r = await fetch(`${apiUrl}${js}`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/javascript/);
  });
});
