// The LoRA shrink as a CTA role: GEMM launches append extra CTAs that compute, for the same input
// x as the base projection, v[t][m][j] = scale * <x[t], A_j> for every LoRA work item. A decode
// token is an item of its own (gather, punica BGMV-style); a prefill segment is cut into items of
// up to kItemTokens tokens that share the A rows they read (segmented, SGMV-style). Riding in the
// GEMM launch costs no extra kernel launch and fills the GEMM's tail wave.
#pragma once
#include "common.cuh"
#include "kernels.h"

namespace lp {
namespace cu {

// 16-byte chunks of an A row (and of each token's x) one lane loads before using the first.
constexpr int kShrinkU = 8;

// e: index of this CTA among the shrink CTAs: (item, module of the launch, rank chunk).
// x: [M, K] T. Each warp takes rank-rows j, reads A_j once and dots it with the item's tokens.
template <typename T>
__device__ void lora_shrink_cta(const ShrinkArgs& a, const T* x, int K, int e) {
  const int per_item = a.nmod * a.rank_chunks;
  const int item = e / per_item, rem = e - item * per_item;
  const int mi = rem / a.rank_chunks, chunk = rem - mi * a.rank_chunks;
  if (item >= *a.n_items) return;
  const LoraItem it = a.items[item];
  const LoraLayout& L = a.lay;
  const int m = a.mods[mi];
  const int idx = (it.slot * L.layers + a.layer) * kMods + m;
  const int r = L.slot_rank[idx];
  const int j0 = chunk * kRankChunk;
  if (j0 >= r) return;
  const int j1 = min(r, j0 + kRankChunk);
  const float scale = L.slot_scale[idx];
  const int* pages = L.slot_pages + it.slot * L.max_rank;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  constexpr int VN = Vec<T>::N;
  const bool vec = (K % VN) == 0;  // rows 16-byte aligned (pool rows always are, x rows iff K % VN == 0)
  const T* xb = x + int64_t(it.tok0) * K;
  for (int j = j0 + warp; j < j1; j += nw) {
    const T* A = lora_a_row<T>(L, pages[j], a.layer, m);
    float acc[kItemTokens];
#pragma unroll
    for (int t = 0; t < kItemTokens; t++) acc[t] = 0.f;
    if (vec && it.ntok == 1) {
      // A decode token (an item of one token): kShrinkU 16-byte A chunks per lane are loaded before
      // the first is used, kShrinkU independent loads in flight per lane instead of one (a rank-16
      // decode shrink reads 8 KiB per A row: latency, not bandwidth, bounds it).
      const uint4 zero = make_uint4(0, 0, 0, 0);
      for (int k0 = lane * VN; k0 < K; k0 += 32 * VN * kShrinkU) {
        uint4 ar[kShrinkU];
#pragma unroll
        for (int u = 0; u < kShrinkU; u++) {
          const int k = k0 + u * 32 * VN;
          ar[u] = k < K ? ld_stream(A + k) : zero;
        }
#pragma unroll
        for (int u = 0; u < kShrinkU; u++) {
          const int k = k0 + u * 32 * VN;
          const uint4 xr = k < K ? *reinterpret_cast<const uint4*>(xb + k) : zero;
          acc[0] = vec_dot<T>(ar[u], xr, acc[0]);
        }
      }
    } else if (vec) {
      // A prefill item: each A chunk serves up to kItemTokens tokens, whose arithmetic hides the
      // load's latency; loading kShrinkU chunks ahead here would need kItemTokens x more registers.
      for (int k = lane * VN; k < K; k += 32 * VN) {
        const uint4 ar = ld_stream(A + k);
#pragma unroll
        for (int t = 0; t < kItemTokens; t++)
          if (t < it.ntok) acc[t] = vec_dot<T>(ar, *reinterpret_cast<const uint4*>(xb + int64_t(t) * K + k), acc[t]);
      }
    } else {
      for (int k = lane; k < K; k += 32) {
        const float av = to_f(A[k]);
#pragma unroll
        for (int t = 0; t < kItemTokens; t++)
          if (t < it.ntok) acc[t] += av * to_f(xb[int64_t(t) * K + k]);
      }
    }
#pragma unroll
    for (int t = 0; t < kItemTokens; t++) {
      if (t < it.ntok) {
        const float s = warp_sum(acc[t]);
        if (lane == 0) a.v[(int64_t(it.tok0 + t) * kMods + m) * L.max_rank + j] = s * scale;
      }
    }
  }
}

// The GEMM kernels' grid is [shrink CTAs][GEMM CTAs]: the shrink CTAs come first so that the block
// scheduler starts them in the first wave, where their latency-bound loads overlap the GEMM's
// streaming, instead of last, where they would form a tail of their own after the weights are read.
// Returns this CTA's index among the GEMM CTAs, or -1 after it ran as a shrink CTA.
template <typename T>
__device__ __forceinline__ int gemm_cta_or_shrink(const GemmArgs& a, int gemm_ctas) {
  const int shrink_ctas = int(gridDim.x) - gemm_ctas;
  if (int(blockIdx.x) < shrink_ctas) {
    lora_shrink_cta<T>(a.lora, static_cast<const T*>(a.x), a.K, int(blockIdx.x));
    return -1;
  }
  return int(blockIdx.x) - shrink_ctas;
}

}  // namespace cu
}  // namespace lp
