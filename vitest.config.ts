import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const root = dirname(fileURLToPath(import.meta.url));
// The addon whose backend 'cuda' runs on the CPU emulator (packages/engine/native/cuda/emu), built with
// the engine wherever the CUDA toolkit's headers are. CI always has them, so there a missing
// build fails the run instead of skipping it.
const emulatedCudaAddon = join(root, 'packages/engine/build/Release/loraplex_native_emu.node');
const withEmulatedCuda = existsSync(emulatedCudaAddon) || process.env.CI === 'true';
// The backend-agnostic engine tests that also run on backend 'cuda' (test-gpu/vitest.config.ts
// runs the same files on a real GPU).
export const cudaBackendTests = [
  'packages/engine/test/fixtures.test.ts',
  'packages/engine/test/mixed-batch.property.test.ts',
  'packages/engine/test/late-masks.test.ts',
];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: { name: 'main', include: ['packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts'] },
      },
      ...(withEmulatedCuda
        ? [
            {
              extends: true,
              test: {
                name: 'cuda-emulator',
                include: cudaBackendTests,
                testTimeout: 300_000,
                env: { LORAPLEX_TEST_BACKEND: 'cuda', LORAPLEX_NATIVE_ADDON: emulatedCudaAddon },
              },
            },
          ]
        : []),
    ],
  },
});
