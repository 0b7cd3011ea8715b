#!/usr/bin/env bash
# One command on a GPU machine: packages/engine/test-gpu/run.sh
#  1. builds the CUDA backend, kernel tests and benchmark standalone (CMake + nvcc, no Node.js),
#     for this GPU's architecture only unless LORAPLEX_CUDA_ARCHS is set;
#  2. runs cuda_kernel_tests: every kernel and whole steps against the CPU backend;
#  3. when Node.js, node_modules and the addon (built with CUDA) are present: the hf-tiny fixture
#     tests on backend 'cuda' within 1e-3 (LORAPLEX_TEST_BACKEND=cuda).
# Logs go to $OUT (default packages/engine/build/gpu-out). Exit status: non-zero if anything failed.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ENGINE=$(dirname "$HERE")
ROOT=$(cd "$ENGINE/../.." && pwd)
OUT=${OUT:-$ENGINE/build/gpu-out}
mkdir -p "$OUT"
if [ -z "${LORAPLEX_CUDA_ARCHS:-}" ] && command -v nvidia-smi >/dev/null; then
  LORAPLEX_CUDA_ARCHS=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
fi
export LORAPLEX_CUDA_ARCHS=${LORAPLEX_CUDA_ARCHS:-80;86;89;90}
BUILD=${BUILD_GPU:-$ENGINE/build/gpu}
echo "== building for sm_${LORAPLEX_CUDA_ARCHS} in $BUILD"
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S "$HERE" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release "-DLORAPLEX_CUDA_ARCHS=$LORAPLEX_CUDA_ARCHS" >"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" >"$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
status=0
echo "== cuda_kernel_tests"
"$BUILD/cuda/cuda_kernel_tests" "$@" 2>&1 | tee "$OUT/kernel_tests.md"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
if command -v node >/dev/null && [ -d "$ROOT/node_modules/vitest" ] && [ -f "$ENGINE/build/Release/loraplex_native.node" ]; then
  if node -e "const a=require('$ENGINE/build/Release/loraplex_native.node'); process.exit(a.hasCuda && a.cudaDeviceCount() > 0 ? 0 : 1)"; then
    echo "== hf-tiny fixtures and mixed-batch property tests on backend cuda"
    (cd "$ROOT" && LORAPLEX_TEST_BACKEND=cuda npx vitest run --config packages/engine/test-gpu/vitest.config.ts) 2>&1 | tee "$OUT/fixtures_cuda.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  else
    echo "== fixtures skipped: the addon in build/Release has no CUDA backend or sees no GPU" | tee "$OUT/fixtures_cuda.log"
  fi
else
  echo "== fixtures skipped: needs node, node_modules and build/Release/loraplex_native.node" | tee "$OUT/fixtures_cuda.log"
fi
exit $status
