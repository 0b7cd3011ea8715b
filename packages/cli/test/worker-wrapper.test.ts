// `loraplex worker` wraps loraplex-worker in a child process (issue 11): the child must not outlive
// the wrapper (even one killed with SIGKILL, which it cannot pass on: the child drains when its
// IPC channel to the parent closes), and a child that dies makes the wrapper exit non-zero,
// saying how the child ended.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { modelDir, until } from '../../../apps/worker/test/helpers/http.js';

const CLI = resolve(fileURLToPath(import.meta.url), '../../dist/cli.js');

/** PIDs of the live (not zombie) children of `ppid`, from /proc. */
function children(ppid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      // stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after the last ')'.
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const [state, parent] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(parent) === ppid && state !== 'Z') out.push(Number(d));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** Running, neither gone nor a zombie waiting to be reaped. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
  });
}

interface Wrapped {
  wrapper: ChildProcess;
  workerPid: number;
  port: number;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

let started: Wrapped[] = [];

async function startWrapped(): Promise<Wrapped> {
  const wrapper = spawn(
    process.execPath,
    [CLI, 'worker', '--model', modelDir('llama'), '--port', '0', '--threads', '1', '--backend', 'cpu'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  wrapper.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  wrapper.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    wrapper.once('exit', (code, signal) => res({ code, signal })),
  );
  await until(() => out.includes('"listening"'), 30_000, `the worker listening (${err})`);
  const port = (JSON.parse(out.split('\n').find((l) => l.includes('"listening"'))!) as { port: number }).port;
  const [workerPid] = children(wrapper.pid!);
  const w = { wrapper, workerPid: workerPid!, port, stderr: () => err, exited };
  started.push(w);
  return w;
}

afterEach(() => {
  for (const w of started) {
    if (w.wrapper.exitCode === null && w.wrapper.signalCode === null) w.wrapper.kill('SIGKILL');
    if (alive(w.workerPid)) process.kill(w.workerPid, 'SIGKILL');
  }
  started = [];
});

describe('loraplex worker wrapper', () => {
  it('takes its worker down when it is killed with SIGKILL: the port is freed', async () => {
    const w = await startWrapped();
    expect(w.workerPid).toBeGreaterThan(0);
    expect(await portOpen(w.port)).toBe(true);
    w.wrapper.kill('SIGKILL');
    await w.exited;
    await until(() => !alive(w.workerPid), 15_000, 'the worker exiting after its parent');
    expect(await portOpen(w.port)).toBe(false);
  });

  it('exits non-zero and says why when its worker is killed', async () => {
    const w = await startWrapped();
    process.kill(w.workerPid, 'SIGKILL');
    expect(await w.exited).toEqual({ code: 1, signal: null });
    expect(w.stderr()).toMatch(/the worker was killed by SIGKILL/);
  });

  it('passes SIGTERM on: the worker drains and both exit 0', async () => {
    const w = await startWrapped();
    w.wrapper.kill('SIGTERM');
    const exited = await w.exited;
    expect(exited, w.stderr()).toEqual({ code: 0, signal: null });
    expect(alive(w.workerPid)).toBe(false);
  });
});
