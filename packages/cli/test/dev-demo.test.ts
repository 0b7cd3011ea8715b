// `loraplex dev` without --model as a real process tree: it serves the trained demo model, creates the
// demo tenant and key, and uploads the three adapters, which then do what they say through the API's
// chat route (greedy, one user turn, as the model was trained). A restart on the same data dir reuses
// the key and uploads nothing.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from '../../../apps/worker/test/helpers/process.js';

const CLI = resolve(fileURLToPath(import.meta.url), '../../dist/cli.js');

interface Ready {
  url: string;
  adminKey: string;
  demoKey: string;
}

interface Dev {
  child: ChildProcess;
  ready: Ready;
  stdout: string;
  exited: Promise<number | null>;
}

/** Starts `loraplex dev` on `dataDir` and resolves on its ready line (event-driven, no polling). */
function startDev(dataDir: string): Promise<Dev> {
  const child = spawn(process.execPath, [CLI, 'dev', '--data-dir', dataDir, '--port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(child);
  const exited = new Promise<number | null>((res) => child.once('exit', res));
  let out = '',
    err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  return new Promise((res, rej) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{"event":"ready"'));
      if (line) res({ child, ready: JSON.parse(line) as Ready, stdout: out, exited });
    });
    void exited.then((code) => rej(new Error(`loraplex dev exited (${code}) before ready:\n${out}\n${err}`)));
  });
}

async function stopDev(d: Dev): Promise<void> {
  d.child.kill('SIGTERM');
  expect(await d.exited).toBe(0);
}

const started: ChildProcess[] = [];
const SCHEMA = {
  type: 'object',
  properties: { name: { type: 'string' }, age: { type: 'integer' } },
  required: ['name', 'age'],
  additionalProperties: false,
};

async function chat(d: Dev, model: string, content: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await fetch(`${d.ready.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${d.ready.demoKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content }], max_tokens: 40, temperature: 0, ...extra }),
  });
  const body = (await res.json()) as { choices: Array<{ message: { content: string } }> };
  expect(res.status, JSON.stringify(body)).toBe(200);
  return body.choices[0]!.message.content;
}

async function adapterList(d: Dev): Promise<Array<{ id: string; name: string; version: number; status: string }>> {
  const res = await fetch(`${d.ready.url}/v1/adapters`, { headers: { authorization: `Bearer ${d.ready.demoKey}` } });
  expect(res.status).toBe(200);
  return ((await res.json()) as { data: Array<{ id: string; name: string; version: number; status: string }> }).data;
}

describe('loraplex dev without --model', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'loraplex-dev-demo-'));
  let dev: Dev;
  beforeAll(async () => {
    ensureBuilt();
    dev = await startDev(dataDir);
  });
  afterAll(() => {
    for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('prints the demo key and a request that uses an adapter', () => {
    expect(dev.ready.demoKey).toMatch(/^lpx_/);
    expect(dev.stdout).toContain(`demo tenant key (kept in the data dir's demo.json): ${dev.ready.demoKey}`);
    expect(dev.stdout).toMatch(/curl -s http:\/\/\S+\/v1\/chat\/completions/);
    expect(dev.stdout).toContain('"model":"upper"');
  });

  it('the base model echoes and each adapter does what it says', async () => {
    expect(await chat(dev, 'loraplex-demo', 'hello world')).toBe('hello world');
    expect(await chat(dev, 'upper', 'hello world')).toBe('HELLO WORLD');
    expect(await chat(dev, 'reverse', 'hello world')).toBe('dlrow olleh');
    const json = await chat(dev, 'extract', 'Ada is 36', {
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: SCHEMA } },
    });
    expect(JSON.parse(json)).toEqual({ name: 'Ada', age: 36 });
  });

  it('a restart on the same data dir reuses the key and uploads nothing', async () => {
    const key = dev.ready.demoKey;
    const before = await adapterList(dev);
    expect(before.map((a) => [a.name, a.version, a.status]).sort()).toEqual([
      ['extract', 1, 'ready'],
      ['reverse', 1, 'ready'],
      ['upper', 1, 'ready'],
    ]);
    await stopDev(dev);
    dev = await startDev(dataDir);
    expect(dev.ready.demoKey).toBe(key);
    const after = await adapterList(dev);
    expect(after.map((a) => a.id).sort()).toEqual(before.map((a) => a.id).sort());
    expect(await chat(dev, 'upper', 'hello world')).toBe('HELLO WORLD');
    await stopDev(dev);
  });
});
