// The backend-selectable engine tests on the GPU (the CPU run covers them with backend 'cpu', and
// the root config's 'cuda-emulator' project with backend 'cuda' on the CPU emulator):
//   LORAPLEX_TEST_BACKEND=cuda npx vitest run --config packages/engine/test-gpu/vitest.config.ts
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { cudaBackendTests } from '../../../vitest.config.js';

export default defineConfig({
  test: {
    root: resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..'),
    include: cudaBackendTests,
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
  },
});
