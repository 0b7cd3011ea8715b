// The embedded stack supervises its worker (issue 12): a worker killed after start is restarted with
// backoff and serves again; the generated admin key is kept in the data dir across stack restarts.
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type StackOptions } from '../src/stack.js';
import { FIXTURES } from './helpers/setup.js';
import { freePort } from '../../worker/test/helpers/http.js';
import { CLI as WORKER_CLI } from '../../worker/test/helpers/process.js';

async function until<T>(probe: () => Promise<T | undefined>, deadlineMs: number, what: string): Promise<T> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('startStack supervision', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'lpx-stack-sup-'));
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  const options = async (lines: string[], dir = dataDir): Promise<StackOptions> => ({
    workerCli: WORKER_CLI,
    model: join(FIXTURES, 'base'),
    servedModelName: 'tiny-llama',
    dataDir: dir,
    port: await freePort(),
    workerPort: await freePort(),
    workerArgs: ['--backend', 'cpu'],
    restartBackoffMs: 50,
    log: (l) => lines.push(l),
  });

  it('restarts a worker killed by SIGKILL, logs it, and the API serves completions again', async () => {
    const lines: string[] = [];
    const stack = await startStack(await options(lines));
    try {
      // The admin key may not serve completions (tenant keys do): make a tenant key first.
      const admin = { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' };
      const tenant = await (
        await fetch(`${stack.url}/v1/tenants`, { method: 'POST', headers: admin, body: '{"name":"sup"}' })
      ).json();
      const key = (
        await (
          await fetch(`${stack.url}/v1/keys`, {
            method: 'POST',
            headers: admin,
            body: JSON.stringify({ tenant_id: tenant.id }),
          })
        ).json()
      ).key as string;
      const completeAs = async (): Promise<true | undefined> => {
        const res = await fetch(`${stack.url}/v1/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'tiny-llama', prompt: 'hello', max_tokens: 2, temperature: 0 }),
        });
        return res.status === 200 ? true : undefined;
      };
      await until(completeAs, 30_000, 'a first completion');

      const first = stack.workerPid!;
      expect(first).toBeGreaterThan(0);
      process.kill(first, 'SIGKILL');
      await until(async () => (stack.workerPid !== first ? true : undefined), 30_000, 'a new worker pid');
      expect(
        lines.some((l) => /^\[stack\] worker exited \(code null \/ signal SIGKILL\); restarting in 50 ms$/.test(l)),
      ).toBe(true);
      await until(completeAs, 60_000, 'a completion through the restarted worker');
    } finally {
      await stack.close();
    }
    await expect(fetch(`${stack.url}/health`)).rejects.toThrow();
  }, 240_000);

  it('keeps the generated admin key in the data dir (mode 600) across two stacks', async () => {
    const dir = join(dataDir, 'keep-key');
    const first = await startStack(await options([], dir));
    const key = first.adminKey;
    await first.close();
    expect((await stat(join(dir, 'admin-key'))).mode & 0o777).toBe(0o600);
    const second = await startStack(await options([], dir));
    try {
      expect(second.adminKey).toBe(key);
      const res = await fetch(`${second.url}/v1/tenants`, { headers: { authorization: `Bearer ${key}` } });
      expect(res.status).toBe(200);
    } finally {
      await second.close();
    }
  }, 240_000);
});
