// Device-side helpers shared by every kernel file: element types, 16-byte vector loads, warp and
// block reductions, and the inline-PTX tensor-core primitives (ldmatrix, mma.sync, cp.async).
// Header-only so every .cu file is self-contained (no relocatable device code, no device link).
#pragma once
#ifdef LP_CUDA_EMU
#include "emu/emu.h"  // first: the kernels below then compile as host C++ (see emu/emu.h)
#endif
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "types.h"

// Kernel launch and dynamic shared memory, spelled so that the emulator can take them over:
//   LP_LAUNCH(grid, block, smem, stream, kernel<...>)(args...)
#ifdef LP_CUDA_EMU
#define LP_LAUNCH(grid, block, smem, stream, ...) ::lp_emu::launch_cfg(grid, block, smem, stream, __VA_ARGS__)
#define LP_DYN_SMEM(type, name) type* name = static_cast<type*>(::lp_emu::dyn_smem())
#else
#define LP_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define LP_DYN_SMEM(type, name) extern __shared__ type name[]
#endif

namespace lp {
namespace cu {

// ---- element conversion ---------------------------------------------------------------------
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Elements of T in one 16-byte vector (8 for 16-bit types, 4 for float).
template <typename T> struct Vec { static constexpr int N = 16 / sizeof(T); };

// Loads 16 bytes (Vec<T>::N elements) and widens them to float. p must be 16-byte aligned.
template <typename T> __device__ __forceinline__ void load_vec(const T* p, float* out) {
  uint4 u = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
  for (int i = 0; i < Vec<T>::N; i++) out[i] = to_f(e[i]);
}
// Dot product of two 16-byte vectors of T held in registers, added to acc element by element in
// order. The words are widened with shifts and masks rather than by viewing the uint4 as T[]: taking
// a register's address made ptxas spill in the kernels that inline the LoRA shrink.
__device__ __forceinline__ float bits_f(uint32_t w) {
#ifdef LP_CUDA_EMU
  float f;
  std::memcpy(&f, &w, 4);
  return f;
#else
  return __uint_as_float(w);
#endif
}
template <typename T> __device__ __forceinline__ float word_dot(uint32_t a, uint32_t x, float acc);
template <> __device__ __forceinline__ float word_dot<float>(uint32_t a, uint32_t x, float acc) {
  return acc + bits_f(a) * bits_f(x);
}
template <> __device__ __forceinline__ float word_dot<__nv_bfloat16>(uint32_t a, uint32_t x, float acc) {
  acc += bits_f(a << 16) * bits_f(x << 16);  // a bfloat16 is the high half of a float
  return acc + bits_f(a & 0xffff0000u) * bits_f(x & 0xffff0000u);
}
template <> __device__ __forceinline__ float word_dot<__half>(uint32_t a, uint32_t x, float acc) {
  const auto lo = [](uint32_t w) { return __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xffffu))); };
  acc += lo(a) * lo(x);
  return acc + lo(a >> 16) * lo(x >> 16);
}
template <typename T> __device__ __forceinline__ float vec_dot(const uint4& a, const uint4& x, float acc) {
  acc = word_dot<T>(a.x, x.x, acc);
  acc = word_dot<T>(a.y, x.y, acc);
  acc = word_dot<T>(a.z, x.z, acc);
  return word_dot<T>(a.w, x.w, acc);
}
// Streaming variant for data read exactly once (weights): do not keep it in L1.
__device__ __forceinline__ uint4 ld_stream(const void* p) {
#ifdef LP_CUDA_EMU
  return *static_cast<const uint4*>(p);
#else
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
#endif
}

// ---- reductions -----------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Block-wide reduction with a warp reduction `Warp`; `scratch` holds >= 32 values; every thread
// gets the result; `identity` fills the lanes past the block's warp count.
template <typename T, T (*Warp)(T)>
__device__ __forceinline__ T block_reduce(T v, T* scratch, T identity) {
  v = Warp(v);
  const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (l == 0) scratch[w] = v;
  __syncthreads();
  v = l < nw ? scratch[l] : identity;
  return Warp(v);
}
__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce<float, warp_sum>(v, scratch, 0.f); }
__device__ __forceinline__ float block_max(float v, float* scratch) { return block_reduce<float, warp_max>(v, scratch, -INFINITY); }
__device__ __forceinline__ double block_sum_d(double v, double* scratch) { return block_reduce<double, warp_sum_d>(v, scratch, 0.0); }

// ---- tensor-core primitives (sm_80+) ---------------------------------------------------------
#ifdef LP_CUDA_EMU
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  if (valid) std::memcpy(smem, gmem, 16); else std::memset(smem, 0, 16);
}
__device__ __forceinline__ void cp_async_commit() {}
template <int N> __device__ __forceinline__ void cp_async_wait() {}
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* p) { ::lp_emu::ldmatrix_x4(r, p, false); }
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* p) { ::lp_emu::ldmatrix_x4(r, p, true); }
template <typename T> __device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  ::lp_emu::mma16816(c, a, b0, b1, std::is_same<T, __nv_bfloat16>::value);
}
#else
__device__ __forceinline__ uint32_t smem_u32(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

// 16-byte async copy global -> shared; when !valid the destination is zero-filled (src-size 0).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_u32(smem)), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}

// D[16x8] += A[16x16] * B[16x8], float accumulators; T is __nv_bfloat16 or __half.
template <typename T> __device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
template <> __device__ __forceinline__ void mma16816<__nv_bfloat16>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma16816<__half>(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif  // LP_CUDA_EMU

// Packs two floats into one register of two 16-bit values (low half = first).
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// ---- LoRA pool addressing ---------------------------------------------------------------------
// A row of rank-row j for (slot, layer, module): [in_m]; its B column follows at + in_pad[m]: [out_m].
template <typename T> __device__ __forceinline__ const T* lora_a_row(const LoraLayout& L, int page, int layer, int m) {
  return static_cast<const T*>(L.pool) + int64_t(page) * L.page_elems + int64_t(layer) * L.layer_elems + L.mod_off[m];
}
// Sum over j < r of v[j] * B_j[o] for one output column o (the LoRA expand of one element).
// v: [r] shrink results of this token (already scaled); pages: the slot's page list.
template <typename T>
__device__ __forceinline__ float lora_delta(const LoraLayout& L, const int* pages, int r, const float* v, int layer, int m, int o) {
  const T* base = static_cast<const T*>(L.pool) + int64_t(layer) * L.layer_elems + L.mod_off[m] + L.in_pad[m] + o;
  float acc = 0.f;
  for (int j = 0; j < r; j++) acc += v[j] * to_f(base[int64_t(pages[j]) * L.page_elems]);
  return acc;
}

}  // namespace cu
}  // namespace lp
