#!/usr/bin/env bash
# build-device.sh BUILD_DIR ARCH: the device's build (device-check.sh stage 'build'), for one CUDA
# architecture, with ptxas's per-kernel register / shared memory / spill report (-Xptxas=-v).
# With node and node-addon-api resolvable (the carry unpacked, or pnpm install here): the engine's
# CMakeLists with plain cmake (no cmake-js, no network: the Node-API headers come from the
# node-api-headers package), targets loraplex_native (-> BUILD_DIR/Release), cuda_kernel_tests and
# loraplex_gpu_bench, so the kernels are compiled once for all three. Without node: the
# standalone test-gpu/CMakeLists.txt (tests and benchmark only).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ENGINE=$(dirname "$HERE")
BUILD=$1 ARCH=$2
GEN=(); command -v ninja >/dev/null && GEN=(-G Ninja)
COMMON=(-DCMAKE_BUILD_TYPE=Release "-DLORAPLEX_CUDA_ARCHS=$ARCH" -DLORAPLEX_CUDA=ON -DLORAPLEX_CUDA_EMU=OFF
  "-DCMAKE_CUDA_FLAGS=-Xptxas=-v")
export LORAPLEX_CUDA_ARCHS=$ARCH
if command -v node >/dev/null && API_INC=$(cd "$ENGINE" && node -p "require('node-api-headers').include_dir" 2>/dev/null) &&
  (cd "$ENGINE" && node -e "require('node-addon-api')" 2>/dev/null); then
  echo "build-device: engine CMakeLists (addon + tests + benchmark) for sm_$ARCH, Node-API headers $API_INC"
  cmake -S "$ENGINE" -B "$BUILD" "${GEN[@]}" "${COMMON[@]}" "-DCMAKE_JS_INC=$API_INC" \
    "-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=$BUILD/Release"
  cmake --build "$BUILD" -j "$(nproc)" --target loraplex_native cuda_kernel_tests loraplex_gpu_bench
else
  echo "build-device: no node / node-addon-api: standalone tests + benchmark for sm_$ARCH (no addon)"
  cmake -S "$HERE" -B "$BUILD" "${GEN[@]}" "${COMMON[@]}"
  cmake --build "$BUILD" -j "$(nproc)" --target cuda_kernel_tests loraplex_gpu_bench
fi
