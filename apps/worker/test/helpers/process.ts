// Starting the built `loraplex-worker` (apps/worker/dist/cli.js) as a child process. The dist is
// rebuilt with tsc when it is missing or older than a source file (CI runs `pnpm build` first).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { REPO } from './http.js';

const APP = join(REPO, 'apps', 'worker');
export const CLI = join(APP, 'dist', 'cli.js');

function newestMtime(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return t;
}

export function ensureBuilt(): void {
  if (existsSync(CLI) && statSync(CLI).mtimeMs >= newestMtime(join(APP, 'src'))) return;
  const tsc = createRequire(join(APP, 'package.json')).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(APP, 'tsconfig.json')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building the worker failed:\n${r.stdout}${r.stderr}`);
}

export interface WorkerProcess {
  child: ChildProcess;
  port: number;
  url: string;
  stdout: () => string;
  exited: Promise<number | null>;
}

export async function spawnWorker(args: string[], timeoutMs = 30_000): Promise<WorkerProcess> {
  const child = spawn(process.execPath, [CLI, '--port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: process.env,
  });
  let out = '',
    err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const port = await new Promise<number>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`worker did not start in ${timeoutMs} ms:\n${out}${err}`)), timeoutMs);
    const check = (): void => {
      const line = out.split('\n').find((l) => l.includes('"listening"'));
      if (line) {
        clearTimeout(timer);
        res((JSON.parse(line) as { port: number }).port);
      }
    };
    child.stdout!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      rej(new Error(`worker exited with ${code} before listening:\n${out}${err}`));
    });
  });
  return { child, port, url: `http://127.0.0.1:${port}`, stdout: () => out, exited };
}
