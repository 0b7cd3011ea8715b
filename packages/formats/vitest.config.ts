// Lets `pnpm exec vitest run` work from this directory; CI runs these files through the root config.
import { defineConfig } from 'vitest/config';

export default defineConfig({ test: { include: ['test/**/*.test.ts'], pool: 'forks', testTimeout: 60_000 } });
