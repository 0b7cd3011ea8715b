// The machine a benchmark ran on, as "model, N cores / M threads" (lscpu when present), for the
// headers of docs/benchmarks.md sections.
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';

export function machine() {
  let model = cpus()[0]?.model?.trim() ?? 'unknown CPU',
    cores = String(cpus().length);
  try {
    const out = execFileSync('lscpu', { encoding: 'utf8' });
    model = /^Model name:\s*(.+)$/m.exec(out)?.[1].trim() ?? model;
    const perSocket = Number(/^Core\(s\) per socket:\s*(\d+)/m.exec(out)?.[1]);
    const sockets = Number(/^Socket\(s\):\s*(\d+)/m.exec(out)?.[1]);
    const logical = /^CPU\(s\):\s*(\d+)/m.exec(out)?.[1];
    if (perSocket && sockets) cores = `${perSocket * sockets} cores / ${logical} threads`;
  } catch {
    /* lscpu missing: keep os.cpus() */
  }
  return `${model}, ${cores}`;
}
