// The SDK as users get it, against a stack this test starts (embedded defaults, fixture model):
// packed with pnpm and installed with npm into a directory outside the workspace, the READMEs'
// quickstart snippets run exactly as the READMEs show them (the .mjs with node, the TypeScript
// compiled by tsc against the installed .d.ts alone); chatStream's deltas add up to chat's greedy
// text; and a program that uploads through presigned parts and generates exits as soon as it is done.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startStack, type Stack } from '@loraplex/api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adaptersDir, freePort, modelDir } from '../../../apps/worker/test/helpers/http.js';
import { CLI as WORKER_CLI, ensureBuilt } from '../../../apps/worker/test/helpers/process.js';
import { Loraplex } from '../src/index.js';

const SDK_DIR = resolve(fileURLToPath(import.meta.url), '../..');
const REPO = resolve(SDK_DIR, '../..');

/** The code block after `<!-- snippet:NAME -->` in a README: what the test runs is what readers see. */
export function snippet(readmePath: string, name: string): string {
  const text = readFileSync(readmePath, 'utf8');
  const at = text.indexOf(`<!-- snippet:${name} -->`);
  if (at < 0) throw new Error(`${readmePath} has no snippet:${name} marker`);
  const m = /```[a-z]*\n([\s\S]*?)```/.exec(text.slice(at));
  if (!m) throw new Error(`${readmePath}: no code block after snippet:${name}`);
  return m[1]!;
}

/** Runs node on a script; resolves with its output, exit status, and the ms from its "done" line to its exit. */
function runNode(
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv,
): Promise<{ status: number | null; stdout: string; stderr: string; doneToExitMs: number | undefined }> {
  return new Promise((res) => {
    const child = spawn(process.execPath, args, { cwd, env: { ...process.env, ...env } });
    let stdout = '',
      stderr = '';
    let doneAt: number | undefined;
    // A process held alive by a forgotten timer would sit here for a minute: end it well before.
    const guard = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (doneAt === undefined && /^done$/m.test(stdout)) doneAt = performance.now();
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (status) => {
      clearTimeout(guard);
      const doneToExitMs = doneAt === undefined ? undefined : performance.now() - doneAt;
      res({ status, stdout, stderr, doneToExitMs });
    });
  });
}

let stack: Stack;
let dataDir: string;
let installDir: string;
let tenantKey: string;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'lp-sdk-pack-'));
  installDir = mkdtempSync(join(tmpdir(), 'lp-sdk-user-'));
  ensureBuilt();
  // The package as published: pnpm pack, then a plain npm install of the tarball (no registry needed:
  // the SDK has no runtime dependencies).
  execFileSync('pnpm', ['--filter', '@loraplex/sdk', 'pack', '--pack-destination', dataDir], { cwd: REPO });
  const tgz = readdirSync(dataDir).find((f) => f.endsWith('.tgz'))!;
  writeFileSync(join(installDir, 'package.json'), JSON.stringify({ name: 'sdk-user', private: true, type: 'module' }));
  execFileSync('npm', ['install', join(dataDir, tgz), '--offline', '--no-audit', '--no-fund'], {
    cwd: installDir,
    stdio: 'pipe',
  });
  stack = await startStack({
    workerCli: WORKER_CLI,
    model: modelDir('llama'),
    servedModelName: 'tiny-llama',
    dataDir: join(dataDir, 'stack'),
    port: await freePort(),
    workerPort: await freePort(),
    workerArgs: ['--backend', 'cpu', '--threads', '1', '--adapter-cache-dir', join(dataDir, 'worker-cache')],
    log: null,
  });
  const admin = new Loraplex({ baseURL: stack.url, apiKey: stack.adminKey });
  const tenant = await admin.tenants.create(`sdk-${randomBytes(3).toString('hex')}`);
  tenantKey = (await admin.keys.create({ tenantId: tenant.id })).key!;
}, 240_000);

afterAll(async () => {
  await stack?.close();
  for (const d of [dataDir, installDir]) if (d) rmSync(d, { recursive: true, force: true });
}, 60_000);

describe('the packed SDK', () => {
  it('installs with no runtime dependencies and no reference to workspace packages', () => {
    const pkg = JSON.parse(readFileSync(join(installDir, 'node_modules/@loraplex/sdk/package.json'), 'utf8'));
    expect(pkg.dependencies ?? {}).toEqual({});
    const dist = join(installDir, 'node_modules/@loraplex/sdk/dist');
    for (const f of readdirSync(dist))
      expect(readFileSync(join(dist, f), 'utf8')).not.toMatch(/(from |import\()['"]@loraplex\//);
    expect(readdirSync(join(installDir, 'node_modules/@loraplex/sdk'))).toContain('README.md');
  });

  it.each([
    ['README.md', 'sdk-quickstart'],
    ['packages/sdk/README.md', 'sdk-quickstart'],
  ])(
    "%s's quickstart .mjs runs as written and prints a completion",
    async (readme, name) => {
      const dir = mkdtempSync(join(installDir, 'run-'));
      cpSync(join(adaptersDir('llama'), 'lora_all_r8'), join(dir, 'my-adapter'), { recursive: true });
      writeFileSync(join(dir, 'quickstart.mjs'), snippet(join(REPO, readme), name));
      const r = await runNode(['quickstart.mjs'], dir, { LORAPLEX_BASE_URL: stack.url, ADMIN_KEY: stack.adminKey });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/^done \d+ \d+$/m); // the upload's progress
      expect(r.stdout).toMatch(/^(length|eos_token|stop_sequence) \d+$/m); // the completion's finish reason and count
      expect(r.stdout).toMatch(/^\{.*"age":\d+.*\}$/m); // JSON mode's parsed object
    },
    120_000,
  );

  it("the README's TypeScript quickstart compiles with tsc against the installed package alone", () => {
    const dir = mkdtempSync(join(installDir, 'ts-'));
    writeFileSync(join(dir, 'quickstart.mts'), snippet(join(SDK_DIR, 'README.md'), 'sdk-quickstart-ts'));
    const tsc = createRequire(join(REPO, 'package.json')).resolve('typescript/bin/tsc');
    const typeRoots = join(REPO, 'node_modules/@types');
    const args = ['--strict', '--module', 'nodenext', '--target', 'es2022', '--typeRoots', typeRoots];
    execFileSync(process.execPath, [tsc, ...args, '--types', 'node', 'quickstart.mts'], { cwd: dir, stdio: 'pipe' });
    expect(readdirSync(dir)).toContain('quickstart.mjs');
  }, 60_000);

  it('a program that uploads through presigned parts and generates exits right after its last await', async () => {
    const dir = mkdtempSync(join(installDir, 'exit-'));
    writeFileSync(
      join(dir, 'upload.mjs'),
      `import { Loraplex } from '@loraplex/sdk';
const client = new Loraplex({ baseURL: process.env.LORAPLEX_BASE_URL, apiKey: process.env.LORAPLEX_API_KEY });
await client.adapters.upload(${JSON.stringify(join(adaptersDir('llama'), 'lora_qv_r4'))}, { name: 'exit-check', multipartThreshold: 1 });
await client.generate('The license', { adapterId: 'exit-check', maxNewTokens: 4 });
console.log('done');
`,
    );
    const r = await runNode(['upload.mjs'], dir, { LORAPLEX_BASE_URL: stack.url, LORAPLEX_API_KEY: tenantKey });
    expect(r.stderr).toBe('');
    expect(r.doneToExitMs).toBeLessThan(2000);
    expect(r.status).toBe(0);
  }, 60_000);
});

describe('chatStream through the API', () => {
  it("its deltas add up to chat's greedy text; usage comes last", async () => {
    const client = new Loraplex({ baseURL: stack.url, apiKey: tenantKey });
    const messages = [{ role: 'user' as const, content: 'Hi' }];
    const whole = await client.chat(messages, { maxNewTokens: 12, temperature: 0 });
    let text = '';
    const events = [];
    for await (const e of client.chatStream(messages, { maxNewTokens: 12, temperature: 0 })) {
      text += e.delta;
      events.push(e);
    }
    expect(text).toBe(whole.message.content);
    const last = events[events.length - 1]!;
    expect(last.usage).toEqual({ promptTokens: whole.promptTokens, completionTokens: whole.completionTokens });
    expect(events.filter((e) => e.finishReason)).toEqual([
      expect.objectContaining({ finishReason: whole.finishReason }),
    ]);
  }, 60_000);

  it('an AbortSignal ends the stream', async () => {
    const client = new Loraplex({ baseURL: stack.url, apiKey: tenantKey });
    const ctrl = new AbortController();
    const seen: string[] = [];
    const err = await (async () => {
      for await (const e of client.chatStream([{ role: 'user', content: 'Hi' }], {
        maxNewTokens: 200,
        signal: ctrl.signal,
      })) {
        seen.push(e.delta);
        ctrl.abort(new Error('stop'));
      }
    })().catch((e: unknown) => e);
    expect((err as Error).message).toBe('stop');
    expect(seen.length).toBe(1);
  }, 60_000);
});
