// The backend that backend-agnostic engine tests run on, and the tolerance that goes with it.
// LORAPLEX_TEST_BACKEND=cuda runs them on the CUDA backend (1e-3, the bound for float32
// weights on the GPU); the default stays the CPU backend at the CPU tests' 1e-4.
export type TestBackend = 'cpu' | 'cuda' | 'auto';

export const TEST_BACKEND: TestBackend = ((): TestBackend => {
  const v = process.env.LORAPLEX_TEST_BACKEND ?? 'cpu';
  if (v !== 'cpu' && v !== 'cuda' && v !== 'auto')
    throw new Error(`LORAPLEX_TEST_BACKEND must be cpu, cuda or auto, got ${v}`);
  return v;
})();

/** Largest allowed |logit difference| against the transformers + PEFT references. */
export const TEST_TOL = TEST_BACKEND === 'cpu' ? 1e-4 : 1e-3;
