// The CUDA backend's kernel and step tests (test-gpu/, the suite a GPU runs) on the CPU emulator:
// every kernel against the CPU backend on fresh random inputs with poisoned outputs, and whole
// steps (mixed adapters, prefill + decode, CUDA graphs captured and replayed, an adapter upload
// racing the steps) against the CPU backend. The binary is built with the addon wherever the CUDA
// toolkit's headers are; CI always has them.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const binary = join(dirname(fileURLToPath(import.meta.url)), '..', 'build', 'cuda', 'emu', 'cuda_kernel_tests_emu');
const present = existsSync(binary);

interface Run {
  code: number | null;
  rows: { name: string; ok: boolean; line: string }[];
  summary: string;
  stderr: string;
}

function runSuite(only: 'kernels' | 'steps'): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, [`--only=${only}`, '--quick', '--seed=' + (20261121 + (only === 'steps' ? 7 : 0))], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const rows = out
        .split('\n')
        .filter((l) => l.startsWith('| ') && !l.startsWith('| check'))
        .map((l) => {
          const cells = l.split('|').map((c) => c.trim());
          return { name: cells[1] ?? '', ok: cells[6] === 'ok', line: l };
        });
      const summary = /(\d+) passed, (\d+) failed/.exec(out)?.[0] ?? '';
      resolve({ code, rows, summary, stderr: err });
    });
  });
}

describe.skipIf(!present && process.env.CI !== 'true')('CUDA backend on the CPU emulator', () => {
  it.each(['kernels', 'steps'] as const)(
    'test-gpu %s: every check passes',
    async (only) => {
      expect(present, `${binary} was not built (needs the CUDA toolkit headers)`).toBe(true);
      const r = await runSuite(only);
      const failed = r.rows.filter((x) => !x.ok).map((x) => x.line);
      expect(failed, r.stderr).toEqual([]);
      expect(r.code, r.stderr).toBe(0);
      // The suites are large; a run that printed a handful of rows stopped early.
      expect(r.rows.length).toBeGreaterThan(only === 'kernels' ? 200 : 100);
      expect(r.summary).toMatch(/ 0 failed$/);
    },
    900_000,
  );
});
