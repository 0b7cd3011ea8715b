// The built `loraplex-api` (apps/api/dist/cli.js) as a real child process, for behaviour that only
// a process shows: signals, exit codes, deadlines.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { API_DIR } from './routing-db.js';

export const API_CLI = join(API_DIR, 'dist', 'cli.js');

export interface ApiProcess {
  child: ChildProcess;
  url: string;
  output: () => string;
  /** Exit code and signal, once it exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `loraplex-api <args>` and resolves once `readyLine` matched its stdout (the URL is its first capture). */
export async function spawnApi(
  args: string[],
  env: Record<string, string>,
  readyLine: RegExp,
  timeoutMs = 60_000,
): Promise<ApiProcess> {
  const child = spawn(process.execPath, [API_CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.once('exit', (code, signal) => res({ code, signal })),
  );
  const url = await new Promise<string>((res, rej) => {
    const timer = setTimeout(
      () => rej(new Error(`loraplex-api ${args[0]} did not start in ${timeoutMs} ms:\n${out}`)),
      timeoutMs,
    );
    const check = (): void => {
      const m = readyLine.exec(out);
      if (m) {
        clearTimeout(timer);
        res(m[1]!);
      }
    };
    child.stdout!.on('data', check);
    void exited.then(({ code }) => {
      clearTimeout(timer);
      rej(new Error(`loraplex-api ${args[0]} exited with ${code} before it was ready:\n${out}`));
    });
  });
  return { child, url, output: () => out, exited };
}
