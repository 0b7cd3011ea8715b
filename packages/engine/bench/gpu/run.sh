#!/usr/bin/env bash
# One command on a GPU machine: packages/engine/bench/gpu/run.sh [--quick]
# Builds the benchmark standalone (see test-gpu/CMakeLists.txt), runs it (random Llama-3-8B-shaped
# bf16 model generated on the GPU), runs the HF transformers + PEFT comparison when torch, transformers
# and peft import, and writes $OUT/benchmarks.md: a section to paste into docs/benchmarks.md.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ENGINE=$(cd "$HERE/../.." && pwd)
OUT=${OUT:-$ENGINE/build/gpu-out}
mkdir -p "$OUT"
if [ -z "${LORAPLEX_CUDA_ARCHS:-}" ] && command -v nvidia-smi >/dev/null; then
  LORAPLEX_CUDA_ARCHS=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
fi
export LORAPLEX_CUDA_ARCHS=${LORAPLEX_CUDA_ARCHS:-80;86;89;90}
BUILD=${BUILD_GPU:-$ENGINE/build/gpu}
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S "$ENGINE/test-gpu" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release "-DLORAPLEX_CUDA_ARCHS=$LORAPLEX_CUDA_ARCHS" >"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" --target loraplex_gpu_bench >"$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "== loraplex_gpu_bench"
"$BUILD/cuda/loraplex_gpu_bench" --json="$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log" || exit 1
if python3 -c "import torch, transformers, peft" 2>/dev/null; then
  echo "== HF transformers + PEFT"
  NEW=16; [ "${1:-}" = "--quick" ] && NEW=8
  PYTHONUNBUFFERED=1 python3 "$HERE/hf_peft_bench.py" --new $NEW 2>"$OUT/hf.err" | tee "$OUT/hf.jsonl" || tail -20 "$OUT/hf.err"
else
  echo "== HF comparison skipped: torch, transformers or peft missing" | tee "$OUT/hf.jsonl"
fi
python3 "$HERE/combine.py" "$OUT/bench.json" "$OUT/hf.jsonl" > "$OUT/benchmarks.md"
echo; cat "$OUT/benchmarks.md"
