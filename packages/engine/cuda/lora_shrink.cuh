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
    if (vec) {
      for (int k = lane * VN; k < K; k += 32 * VN) {
        float av[VN];
        load_vec(A + k, av);
#pragma unroll
        for (int t = 0; t < kItemTokens; t++) {
          if (t < it.ntok) {
            float xv[VN];
            load_vec(xb + int64_t(t) * K + k, xv);
#pragma unroll
            for (int i = 0; i < VN; i++) acc[t] += av[i] * xv[i];
          }
        }
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

}  // namespace cu
}  // namespace lp
