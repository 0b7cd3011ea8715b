// An oversized POST sent from a child process (post-oversized.mjs), so the server under test, when
// it runs in the test's own process, shares its event loop with nothing but what the test measures.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'post-oversized.mjs');

export interface OversizedResult {
  /** The answer's status; 0 when the upload ended in a socket error first (`connection` then holds its code). */
  status: number;
  connection: string | null;
  body: string;
  /** Bytes the client's socket took (what the server read, plus what the kernel buffers held). */
  bytesWritten: number;
}

export function postOversized(opts: {
  url: string;
  bytes: number;
  chunked: boolean;
  headers?: Record<string, string>;
}): Promise<OversizedResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SCRIPT, JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '',
      err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (code === 0 && line) resolve(JSON.parse(line) as OversizedResult);
      else reject(new Error(`the oversized POST exited with ${code}:\n${out}${err}`));
    });
  });
}
