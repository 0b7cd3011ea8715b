// The addon's build reads environment variables (LORAPLEX_CUDA, LORAPLEX_CUDA_ARCHS...). Turborepo 2
// runs tasks in strict env mode: a variable its turbo.json does not list is dropped before the build
// sees it, and is no part of the cache key (a CPU-only build would be replayed for a CUDA one). So
// every variable the CMake files read must be in tasks.build.env.
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ENGINE = resolve(import.meta.dirname, '..');
const REPO = resolve(ENGINE, '../..');

function cmakeFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory()) {
      if (['build', 'node_modules', 'dist', 'test', 'test-gpu', 'bench'].includes(e.name)) continue;
      out.push(...cmakeFiles(join(dir, e.name)));
    } else if (e.name === 'CMakeLists.txt' || e.name.endsWith('.cmake')) {
      out.push(join(dir, e.name));
    }
  }
  return out;
}

/** `$ENV{X}`, `DEFINED ENV{X}` and the `ENV X` hints of find_path/find_program, comments left out. */
function envVarsRead(cmake: string): string[] {
  const code = cmake
    .split('\n')
    .map((l) => l.replace(/#.*$/, ''))
    .join('\n');
  const names = new Set<string>();
  for (const m of code.matchAll(/\bENV\{(\w+)\}/g)) names.add(m[1]!);
  for (const m of code.matchAll(/\bENV\s+(\w+)/g)) names.add(m[1]!);
  return [...names].sort();
}

describe('turbo.json passes the build switches to the engine build', () => {
  const turbo = JSON.parse(readFileSync(join(REPO, 'turbo.json'), 'utf8')) as { tasks: { build: { env?: string[] } } };
  const listed = new Set(turbo.tasks.build.env ?? []);
  const read = new Map(cmakeFiles(ENGINE).map((f) => [relative(ENGINE, f), envVarsRead(readFileSync(f, 'utf8'))]));

  it('finds the switches the CMake files read', () => {
    const all = new Set([...read.values()].flat());
    for (const v of ['LORAPLEX_CUDA', 'LORAPLEX_CUDA_EMU', 'LORAPLEX_CUDA_ARCHS']) expect(all).toContain(v);
  });

  it('lists every one in tasks.build.env', () => {
    const missing = [...read].flatMap(([file, vars]) =>
      vars.filter((v) => !listed.has(v)).map((v) => `${v} (${file})`),
    );
    expect(missing).toEqual([]);
  });

  it('parses the forms CMake reads the environment in', () => {
    const sample =
      'if(DEFINED ENV{A_1})\n  set(X "$ENV{B}")\nendif()\nfind_path(P h.h ENV C_HOME)\n# $ENV{COMMENTED}\n';
    expect(envVarsRead(sample)).toEqual(['A_1', 'B', 'C_HOME']);
  });
});
