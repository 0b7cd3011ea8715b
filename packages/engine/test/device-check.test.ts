// packages/engine/test-gpu/device-check.sh --dry-run --quick: the one command of a GPU session,
// run here without a GPU so that it cannot rot between the rare sessions that have one. It packs
// the carry (node + pruned node_modules) and checks that a device call fits its 64 MiB, starts the
// carried node and vitest as the device would, checks the Python scripts' syntax, builds the test
// and benchmark binaries for the GPU inside the addon build (kernels already compiled there), sees
// them start and report no GPU, and writes summary.json. The emulator kernel tests it would also
// run are test/cuda-emulator.test.ts.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const engine = join(dirname(fileURLToPath(import.meta.url)), '..');
const script = join(engine, 'test-gpu', 'device-check.sh');
// The addon build configured with nvcc (the CUDA backend compiled): CI always has it. The marker is
// native/cuda/CMakeLists.txt's cache entry: CMAKE_CUDA_COMPILER is not cached when the engine's CMakeLists
// finds nvcc at /usr/local/cuda/bin itself.
const cache = join(engine, 'build', 'CMakeCache.txt');
const cudaBuild = existsSync(cache) && /^LORAPLEX_CUDA_ARCHS:/m.test(readFileSync(cache, 'utf8'));

interface Summary {
  mode: string;
  ok: boolean;
  stages: Record<string, { rc: string; s: number; log_tail?: string }>;
  carry?: { total: number; limit: number };
}

describe.skipIf(!cudaBuild && process.env.CI !== 'true')('device-check.sh --dry-run --quick', () => {
  const out = mkdtempSync(join(tmpdir(), 'lp-devcheck-'));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('runs every stage that needs no GPU and leaves at most 6 files with summary.json', async () => {
    expect(cudaBuild, 'packages/engine/build was not configured with a CUDA compiler').toBe(true);
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
      const child = spawn('bash', [script, '--dry-run', '--quick'], {
        env: { ...process.env, OUT: out },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (d: Buffer) => (output += d.toString()));
      child.stderr.on('data', (d: Buffer) => (output += d.toString()));
      child.on('error', reject);
      child.on('close', (c) => resolve({ code: c, output }));
    });
    const files = readdirSync(out);
    expect(files.length, output).toBeLessThanOrEqual(6);
    expect(files).toContain('summary.json');
    expect(files).toContain('logs.tgz');
    const s = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as Summary;
    const failed = Object.entries(s.stages).filter(([, v]) => v.rc !== '0' && v.rc !== 'skipped');
    expect(failed, output).toEqual([]);
    expect(code, output).toBe(0);
    expect(s.mode).toBe('dry-run quick');
    expect(Object.keys(s.stages)).toEqual(
      expect.arrayContaining(['carry', 'carry_unpack', 'python', 'build', 'no_gpu']),
    );
    for (const st of ['carry', 'carry_unpack', 'python', 'build', 'no_gpu'])
      expect(s.stages[st]!.rc, `${st}\n${output}`).toBe('0');
    expect(s.carry!.total).toBeLessThanOrEqual(64 * 1024 * 1024);
    expect(s.ok).toBe(true);
  }, 600_000);
});
