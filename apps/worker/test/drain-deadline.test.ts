// The worker's drain has a deadline (issue 11): LORAPLEX_SHUTDOWN_TIMEOUT_S bounds how long SIGTERM
// waits for accepted requests; past it the process exits 1 and says what was still running.
import { afterEach, describe, expect, it } from 'vitest';
import { modelDir } from './helpers/http.js';
import { ensureBuilt, spawnWorker, type WorkerProcess } from './helpers/process.js';

let w: WorkerProcess | undefined;

afterEach(() => {
  if (w && w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
  delete process.env.LORAPLEX_SHUTDOWN_TIMEOUT_S;
});

describe('drain deadline', () => {
  it('exits 1 with a message when accepted requests outlast LORAPLEX_SHUTDOWN_TIMEOUT_S', async () => {
    ensureBuilt();
    process.env.LORAPLEX_SHUTDOWN_TIMEOUT_S = '0';
    w = await spawnWorker(['--model', modelDir('llama'), '--threads', '1', '--backend', 'cpu']);
    let err = '';
    w.child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const res = await fetch(`${w.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'a b c', max_tokens: 100, ignore_eos: true, n: 16, stream: true }),
    });
    const reader = res.body!.getReader();
    await reader.read(); // generating: 1600 tokens to go
    w.child.kill('SIGTERM');
    expect(await w.exited).toBe(1);
    expect(err).toMatch(/drain did not finish within 0 s \(\d+ running, \d+ waiting\): exiting/);
    await expect(
      (async () => {
        for (;;) if ((await reader.read()).done) return;
      })(),
    ).rejects.toThrow();
  });
});
