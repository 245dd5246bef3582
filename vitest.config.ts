import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // tfjs-node holds one native TF runtime per process; forks keep tests isolated
    // and let the memory-leak assertions see only their own tensors.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
