// The device side of the CUDA emulator: lets the kernels of cuda/*.cu compile as plain C++ (build
// flag LP_CUDA_EMU) and run on the CPU, one CUDA thread per fiber, so that machines without a GPU
// (CI, developers) still execute every kernel, launch and graph of the CUDA backend against the
// CPU backend. It checks what a GPU would not forgive: launch configurations, barriers reached by
// only part of a block (deadlock), warp exchanges with exited lanes, synchronous calls inside a
// stream capture, copies outside device allocations. It says nothing about speed, and memory
// ordering between threads is stronger than on a GPU (a thread runs until its next barrier).
//
// Included first by every emulated translation unit (common.cuh does it), before the macros below
// take effect; the CUDA headers are used in their host mode for types (dim3, uint4, __half, ...).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

namespace lp_emu {

// ---- the running CUDA thread ------------------------------------------------------------------
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void sync_block();              // __syncthreads
int sync_block_or(int pred);    // __syncthreads_or
void* dyn_smem();               // extern __shared__ (dynamic shared memory of this block)
// Warp collective: every live lane of the warp deposits `bytes` (<= kSlotBytes) and gets the base
// of all lanes' deposits, lane l's at base + l * kSlotBytes. Reading a lane that has exited is an
// error of the launch.
constexpr int kSlotBytes = 64;
const unsigned char* warp_gather(const void* mine, size_t bytes);
void check_lane_live(int lane);

// Tensor-core and async-copy instructions, from the PTX ISA's fragment layouts.
void ldmatrix_x4(uint32_t r[4], const void* smem_row, bool trans);
void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1, bool bf16);

// ---- launches ------------------------------------------------------------------------------
// Runs (or, on a capturing stream, records) a grid; `body` runs one CUDA thread.
void launch(const void* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, std::function<void()> body);

template <class... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  template <class... A>
  void operator()(A&&... a) const {
    // Arguments are copied at launch, as the GPU copies them into parameter space.
    auto args = std::make_shared<std::tuple<std::decay_t<P>...>>(std::forward<A>(a)...);
    auto k = kernel;
    launch(reinterpret_cast<const void*>(k), grid, block, smem, stream, [k, args]() { std::apply(k, *args); });
  }
};
template <class... P>
Launch<P...> launch_cfg(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, void (*kernel)(P...)) {
  return Launch<P...>{kernel, grid, block, smem, stream};
}

}  // namespace lp_emu

// ---- CUDA C++ device vocabulary as host C++ ----------------------------------------------------
#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Blocks run one after another on one thread, so a function-local static is block-shared memory.
#define __shared__ static
#define threadIdx (::lp_emu::thread_idx())
#define blockIdx (::lp_emu::block_idx())
#define blockDim (::lp_emu::block_dim())
#define gridDim (::lp_emu::grid_dim())

inline void __syncthreads() { ::lp_emu::sync_block(); }
inline int __syncthreads_or(int p) { return ::lp_emu::sync_block_or(p); }
inline void __threadfence() {}
template <class T> inline T __ldcg(const T* p) { return *p; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int = 32) {
  static_assert(sizeof(T) <= ::lp_emu::kSlotBytes, "shuffle of a large type");
  const int src = int(::lp_emu::thread_idx().x & 31) ^ lane_mask;
  const unsigned char* all = ::lp_emu::warp_gather(&v, sizeof(T));
  ::lp_emu::check_lane_live(src);
  T r;
  std::memcpy(&r, all + src * ::lp_emu::kSlotBytes, sizeof(T));
  return r;
}

// Atomics: blocks and threads never run at the same time, so plain read-modify-write is atomic.
template <class T, class U> inline T atomicAdd(T* p, U v) { const T o = *p; *p = T(o + v); return o; }
template <class T, class U> inline T atomicOr(T* p, U v) { const T o = *p; *p = T(o | v); return o; }

// CUDA's device min/max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
