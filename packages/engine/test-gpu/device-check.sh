#!/usr/bin/env bash
# The one command of a GPU session (H100 / H200; 15 minutes of device time in all, <= 10 per
# command, <= 8 result files back):
#   bash packages/engine/test-gpu/device-check.sh            (carry: .device, see pack-carry.sh)
# builds the CUDA backend, its kernel + step tests, the benchmark and the Node addon for this GPU's
# architecture, then runs the kernel and step tests, the benchmark, the Node fixture tests on
# backend 'cuda' and the HF transformers + PEFT comparison. Every stage runs under its own time
# limit inside one budget (BUDGET seconds, default and at most 480), so the command always ends
# and always leaves its results: $OUT (default packages/engine/build/gpu-out) gets at most 6 files:
#   summary.json     everything a reader needs (stages, test counts and failures, benchmark
#                    numbers, HF runs, fixture counts, ptxas registers/spills, the GPU)
#   kernel_tests.md  the kernel + step test table        bench.json / benchmarks.md  the benchmark
#   hf.jsonl         the HF + PEFT runs (partial ones kept)  logs.tgz  every stage's full output
# Options: --quick (shorter tests and benchmark), --no-bench, --no-hf, --no-fixtures, --sanitize
# (compute-sanitizer memcheck + racecheck over the quick kernel tests).
#
#   device-check.sh --dry-run [--quick]   (no GPU; CI runs it through test/device-check.test.ts)
# runs every stage that needs no GPU: the build for sm_90 (the device's build; --quick instead
# builds the test and benchmark targets inside the addon build that `pnpm build` made, which
# already compiled the kernels for sm_90), the test binary and the benchmark starting and finding
# no GPU, the emulator kernel tests (skipped by --quick: test/cuda-emulator.test.ts runs them), the
# Python scripts' syntax, the carry packing (into scratch space: a packed .device stays as it was)
# and the size check of what a device call sends (--quick packs with a fast xz level: larger, so a
# pass is conservative), the carry unpacked and started as the device does, and summary.json
# written from the dry run's own outputs.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ENGINE=$(dirname "$HERE")
ROOT=$(cd "$ENGINE/../.." && pwd)
OUT=${OUT:-$ENGINE/build/gpu-out}
DRY=0; QUICK=""; SAN=0; HF=1; BENCH=1; FIX=1
for a in "$@"; do
  case $a in
    --dry-run) DRY=1 ;; --quick) QUICK=--quick ;; --sanitize) SAN=1 ;;
    --no-hf) HF=0 ;; --no-bench) BENCH=0 ;; --no-fixtures) FIX=0 ;;
    *) echo "device-check.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
rm -f "$OUT"/summary.json "$OUT"/kernel_tests.md "$OUT"/benchmarks.md "$OUT"/bench.json "$OUT"/hf.jsonl "$OUT"/logs.tgz
RAW=$(mktemp -d /tmp/lpdev.XXXXXX)
# On the GPU machine at most 8 minutes (a device command may run 10); a dry run on a small CI
# machine gets an hour.
if [ $DRY -eq 1 ]; then BUDGET=${BUDGET:-3600}; else BUDGET=${BUDGET:-480}; [ "$BUDGET" -gt 480 ] && BUDGET=480; fi
T0=$(date +%s); DEADLINE=$((T0 + BUDGET))
STAGES=()

# stage NAME LIMIT CMD...: runs CMD (stdout + stderr to $RAW/NAME.log) for at most
# min(LIMIT, budget left - 20 s) seconds; records exit status and duration; prints one line.
stage() {
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - $(date +%s) - 20))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then STAGES+=("$name skipped 0 0"); echo "== $name: skipped (budget spent)"; return 124; fi
  local s; s=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >"$RAW/$name.log" 2>&1
  local rc=$?
  STAGES+=("$name $rc $(($(date +%s) - s)) $limit")
  echo "== $name: rc=$rc in $(($(date +%s) - s)) s (limit $limit s)"
  return $rc
}
skip() { STAGES+=("$1 skipped 0 0"); echo "== $1: skipped ($2)"; }

# 0. What the machine has.
{
  nvidia-smi --query-gpu=name,compute_cap,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv,noheader 2>&1 | head -1
  command -v nvcc >/dev/null && nvcc --version | tail -1
  cmake --version | head -1; g++ --version | head -1; echo "ninja $(ninja --version 2>&1)"; echo "cores $(nproc)"; uname -r
  command -v compute-sanitizer ncu xz node python3
  python3 -c "import sys; print('python', sys.version.split()[0])"
  python3 -m pip list 2>/dev/null | grep -iE '^(torch|transformers|peft|accelerate) '
} >"$RAW/env.txt" 2>&1

NODE=""; NODE_MODULES_OK=0
# unpack_carry CARRY DIR DEST: CARRY/node.xz -> DIR/node, CARRY/nm.tar.xz (node_modules) -> DEST
# (on the device the repo, whose tree has none).
unpack_carry() {
  local carry=$1 dir=$2 dest=$3
  mkdir -p "$dir" "$dest" &&
    python3 -c "import lzma, shutil, os, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb')); os.chmod(sys.argv[2], 0o755)" "$carry/node.xz" "$dir/node" &&
    python3 -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$carry/nm.tar.xz" "$dest" &&
    "$dir/node" --version
}
export -f unpack_carry; export ROOT

if [ $DRY -eq 1 ]; then
  ARCH=90
  # 1. The carry: pack it (a fast xz level under --quick) into scratch space (a packed .device
  #    stays as it was) and check what a device call sends.
  SCRATCH=$(mktemp -d /tmp/lpdev-carry.XXXXXX)
  LEVEL=6; [ -n "$QUICK" ] && LEVEL=1
  stage carry 400 bash "$HERE/pack-carry.sh" --level "$LEVEL" --out "$SCRATCH/device"
  # 2. The carry as the device uses it: node starts, vitest and the tokenizers binding load.
  if [ -f "$SCRATCH/device/node.xz" ]; then
    stage carry_unpack 120 bash -c "unpack_carry '$SCRATCH/device' '$SCRATCH/node' '$SCRATCH/carry' && cd '$SCRATCH/carry' && '$SCRATCH/node/node' node_modules/vitest/vitest.mjs --version && '$SCRATCH/node/node' -e \"require('./packages/engine/node_modules/tokenizers'); require('./packages/engine/node_modules/node-api-headers'); console.log(require('./packages/engine/node_modules/node-addon-api').include_dir)\""
  fi
  rm -rf "$SCRATCH"
  # 3. Python scripts: syntax (the device's python3 runs them).
  stage python 60 python3 -m py_compile "$ENGINE/bench/gpu/hf_peft_bench.py" "$ENGINE/bench/gpu/combine.py" "$HERE/summarize.py" "$HERE/pack_carry.py"
  # 4. Build for sm_90.
  if [ -n "$QUICK" ] && [ -f "$ENGINE/build/CMakeCache.txt" ] && grep -q '^LORAPLEX_CUDA_ARCHS:' "$ENGINE/build/CMakeCache.txt"; then
    BUILD=$ENGINE/build
    stage build 400 nice -n 10 cmake --build "$BUILD" -j "$(nproc)" --target cuda_kernel_tests loraplex_gpu_bench
    BUILT=$?
  else
    BUILD=${BUILD_GPU:-$ENGINE/build/gpu-dry}
    stage build 1800 nice -n 10 bash "$HERE/build-device.sh" "$BUILD" "$ARCH"
    BUILT=$?
  fi
  # 5. The binaries start and find no GPU (exit 77), as on a machine without one.
  if [ $BUILT -eq 0 ]; then
    stage no_gpu 60 bash -c "'$BUILD/cuda/cuda_kernel_tests' --quick; r1=\$?; '$BUILD/cuda/loraplex_gpu_bench' --quick; r2=\$?; echo \"rc \$r1 \$r2\"; [ \$r1 -eq 77 ] && [ \$r2 -eq 77 ]"
  fi
  # 6. The emulator kernel and step tests (the same suite as the GPU's).
  EMU=$ENGINE/build/cuda/emu/cuda_kernel_tests_emu
  if [ -n "$QUICK" ]; then
    skip emulator "--quick: test/cuda-emulator.test.ts runs them"
  elif [ -x "$EMU" ]; then
    stage emulator 3600 "$EMU" --quick
    cp "$RAW/emulator.log" "$RAW/kernel_tests.md"
  else
    skip emulator "$EMU not built"
  fi
else
  # ------------------------------------------------------------------ on the GPU machine
  ARCH=${LORAPLEX_CUDA_ARCHS:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')}
  ARCH=${ARCH:-90}
  BUILD=${BUILD_GPU:-$ENGINE/build/gpu}
  # 1. Node and node_modules from the carry (the addon build reads node-addon-api's headers).
  if [ $FIX -eq 1 ] && [ -f "$ROOT/.device/node.xz" ] && [ -f "$ROOT/.device/nm.tar.xz" ]; then
    stage carry_unpack 60 bash -c "unpack_carry '$ROOT/.device' /tmp/lpnode '$ROOT'" && NODE=/tmp/lpnode/node && NODE_MODULES_OK=1
  else
    FIX=0; skip carry_unpack "no .device carry (packages/engine/test-gpu/pack-carry.sh)"
  fi
  # 2. Build: kernels for this GPU only, with ptxas's register / spill report.
  stage build 240 env PATH="$(dirname "${NODE:-/nonexistent/x}"):$PATH" bash "$HERE/build-device.sh" "$BUILD" "$ARCH"
  BUILT=$?
  if [ $BUILT -eq 0 ]; then
    # 3. Kernel and step tests: every kernel and whole steps against the CPU backend.
    stage tests 150 "$BUILD/cuda/cuda_kernel_tests" $QUICK
    cp "$RAW/tests.log" "$RAW/kernel_tests.md"
    if [ $SAN -eq 1 ] && command -v compute-sanitizer >/dev/null; then
      stage memcheck 90 compute-sanitizer --tool memcheck --leak-check no --print-limit 20 "$BUILD/cuda/cuda_kernel_tests" --only=kernels --quick
      stage racecheck 90 compute-sanitizer --tool racecheck --racecheck-report analysis --print-limit 20 "$BUILD/cuda/cuda_kernel_tests" --only=kernels --quick
    fi
    # 4. Benchmark (Llama-3-8B shapes, random bf16 weights generated on the GPU).
    if [ $BENCH -eq 1 ]; then
      stage bench 150 "$BUILD/cuda/loraplex_gpu_bench" $QUICK --json="$RAW/bench.json"
    else
      skip bench "--no-bench"
    fi
    # 5. The Node fixture tests on backend 'cuda' (hf-tiny within 1e-3, mixed batches, late masks).
    ADDON=$BUILD/Release/loraplex_native.node
    if [ $FIX -eq 1 ] && [ -f "$ADDON" ]; then
      stage fixtures 120 bash -c "cd '$ROOT' && LORAPLEX_TEST_BACKEND=cuda LORAPLEX_NATIVE_ADDON='$ADDON' '$NODE' node_modules/vitest/vitest.mjs run --config packages/engine/test-gpu/vitest.config.ts --reporter=default --reporter=json --outputFile='$RAW/fixtures.json'"
    else
      skip fixtures "no carry or no addon"
    fi
  fi
  # 6. HF transformers + PEFT on the same GPU; one JSON line per finished batch size, so a run cut
  #    short by its limit keeps what it finished.
  if [ $HF -eq 1 ]; then
    NEW=16; [ -n "$QUICK" ] && NEW=8
    stage hf 180 env PYTHONUNBUFFERED=1 python3 "$ENGINE/bench/gpu/hf_peft_bench.py" --new $NEW
  else
    skip hf "--no-hf"
  fi
fi

# Results: at most 6 files in $OUT.
printf '%s\n' "${STAGES[@]}" >"$RAW/stages.txt"
[ -f "$RAW/hf.log" ] && grep '^{' "$RAW/hf.log" >"$RAW/hf.jsonl"
[ -f "$RAW/kernel_tests.md" ] && cp "$RAW/kernel_tests.md" "$OUT/"
[ -f "$RAW/bench.json" ] && cp "$RAW/bench.json" "$OUT/"
[ -f "$RAW/hf.jsonl" ] && cp "$RAW/hf.jsonl" "$OUT/"
[ -f "$RAW/bench.json" ] && python3 "$ENGINE/bench/gpu/combine.py" "$RAW/bench.json" "$RAW/hf.jsonl" >"$OUT/benchmarks.md" 2>"$RAW/combine.err"
python3 "$HERE/summarize.py" "$RAW" "$OUT/summary.json" --started "$T0" --budget "$BUDGET" --arch "$ARCH" --mode "$([ $DRY -eq 1 ] && echo dry-run || echo gpu)${QUICK:+ quick}"
SUMMARY_RC=$?
tar czf "$OUT/logs.tgz" -C "$RAW" . 2>/dev/null
rm -rf "$RAW"
echo "== $(ls "$OUT" | wc -l) files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $SUMMARY_RC
