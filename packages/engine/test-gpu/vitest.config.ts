// The backend-selectable engine tests on the GPU (the CPU run covers them with backend 'cpu'):
//   LORAPLEX_TEST_BACKEND=cuda npx vitest run --config packages/engine/test-gpu/vitest.config.ts
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    root: resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..'),
    include: ['packages/engine/test/fixtures.test.ts', 'packages/engine/test/mixed-batch.property.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
  },
});
