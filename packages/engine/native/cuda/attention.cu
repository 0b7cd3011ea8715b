// Paged attention over the KV cache (which already holds this step's keys and values).
// Cache layout: [blocks][layers][2 (K, V)][kv_heads][block_size][head_dim], element type T.
//
// attn_decode: one query token per CTA group, flash-decoding style. CTA = (token, kv head,
//   sub-group of <= 8 query heads sharing it (GQA: K/V read once for the group), split of the
//   token's context). Splits write (unnormalised output, max, sum) partials; the last split CTA to
//   finish merges them in split order (deterministic, no second launch). Split ranges are computed
//   on the device from the token's position, so a captured graph stays valid as contexts grow.
// attn_prefill: causal, tiled (FlashAttention-2 on mma.sync m16n8k16): CTA = (64-token tile of
//   one segment, query head); K/V tiles of 64 keys are gathered through the block table with
//   cp.async into a double buffer; online softmax in base 2.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"

namespace lp {
namespace cu {

namespace {

constexpr int kDecThreads = 128, kDecTile = 64, kMaxG = 8;
// 16-byte K or V chunks one thread loads before using the first (a bf16 head_dim-128 tile is 8
// K chunks and 8 V chunks per thread: each phase issues the whole tile's loads at once).
constexpr int kDecPF = 8;

template <typename T>
__global__ void __launch_bounds__(kDecThreads) attn_decode_kernel(AttnArgs a, int nsub, int gcta) {
  constexpr int VN = Vec<T>::N;  // elements per 16-byte chunk
  __shared__ float qs[kMaxG][256];                 // pre-scaled queries [g][D]
  __shared__ float sc[kMaxG][kDecTile];            // scores, then probabilities [g][key]
  __shared__ float m_s[kMaxG], l_s[kMaxG], alpha_s[kMaxG];
  __shared__ float red[kDecThreads * kMaxG * VN];  // [key lane][g][DP] PV partials
  __shared__ int is_last;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int D = a.D, nkv = a.nkv, G = a.nh / nkv, bs = a.block_size;
  const int group = blockIdx.x, split = blockIdx.y, splits = gridDim.y;
  const int li = group / (nkv * nsub), kvh = (group / nsub) % nkv, sub = group % nsub;
  const int t = a.tok_list ? a.tok_list[li] : li;
  const int h0 = kvh * G + sub * gcta, gh = min(gcta, G - sub * gcta);
  const int pos = a.positions[t], first = a.window > 0 ? max(0, pos - a.window + 1) : 0, n = pos - first + 1;
  const int kb = first + int(int64_t(n) * split / splits), ke = first + int(int64_t(n) * (split + 1) / splits);  // [kb, ke)
  const int* table = a.block_table + a.seg_block_off[a.tok_seg[t]];
  const T* kv = static_cast<const T*>(a.kv);
  auto kaddr = [&](int p, int kind) -> const T* {
    return kv + ((((int64_t(table[p / bs]) * a.layers + a.layer) * 2 + kind) * nkv + kvh) * bs + p % bs) * D;
  };

  // Rows are read in chunks of VN elements: 16-byte loads when D is a multiple of VN, else element
  // by element with the chunk's tail past D read as zero. DP = D padded to whole chunks.
  const int NCH = (D + VN - 1) / VN, DP = NCH * VN;
  const bool vec = D % VN == 0;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  auto load_raw = [&](const T* row, int ch) -> uint4 {
    if (vec) return *reinterpret_cast<const uint4*>(row + ch * VN);
    uint4 u = zero;
    T* e = reinterpret_cast<T*>(&u);
    for (int i = 0; i < VN; i++)
      if (ch * VN + i < D) e[i] = row[ch * VN + i];
    return u;
  };
  for (int e = tid; e < gh * DP; e += kDecThreads) {
    const int g = e / DP, dd = e % DP;
    qs[g][dd] = dd < D ? a.q[(int64_t(t) * a.nh + h0 + g) * D + dd] * a.scale : 0.f;
  }
  if (tid < kMaxG) { m_s[tid] = -INFINITY; l_s[tid] = 0.f; }
  // Score phase: LPK lanes share one key (LPK a power of two), each reading CPL chunks.
  int LPK = 1;
  while (LPK * 2 <= min(32, NCH)) LPK *= 2;
  const int CPL = (NCH + LPK - 1) / LPK, KPW = 32 / LPK, kl = lane / LPK, cl = lane % LPK;
  // Keys of a tile this lane scores: warp * KPW + kl + it * 4 * KPW for it < nit; chunks: nit * CPL.
  const int nit = (kDecTile - warp * KPW + 4 * KPW - 1) / (4 * KPW), nfl = nit * CPL;
  float d[kMaxG];
#pragma unroll
  for (int g = 0; g < kMaxG; g++) d[g] = 0.f;
  // PV phase: thread = (chunk c, key lane kl2) over NKL key lanes.
  const int NKL = kDecThreads / NCH, c = tid % NCH, kl2 = tid / NCH;
  float acc[kMaxG][VN];
#pragma unroll
  for (int g = 0; g < kMaxG; g++)
#pragma unroll
    for (int i = 0; i < VN; i++) acc[g][i] = 0.f;
  __syncthreads();

  for (int k0 = kb; k0 < ke; k0 += kDecTile) {
    const int nk = min(kDecTile, ke - k0);
    // Score phase: this lane's chunks of the whole tile (its keys x CPL chunks each) are loaded
    // kDecPF at a time before any is used, kDecPF independent 16-byte loads in flight per thread.
    for (int f0 = 0; f0 < nfl; f0 += kDecPF) {
      uint4 raw[kDecPF];
#pragma unroll
      for (int u = 0; u < kDecPF; u++) {
        const int f = f0 + u, it = f / CPL, ch = cl + (f - it * CPL) * LPK, kk = warp * KPW + it * 4 * KPW + kl;
        raw[u] = f < nfl && kk < nk && ch < NCH ? load_raw(kaddr(k0 + kk, 0), ch) : zero;
      }
#pragma unroll
      for (int u = 0; u < kDecPF; u++) {
        const int f = f0 + u, it = f / CPL, ci = f - it * CPL, ch = cl + ci * LPK, kk = warp * KPW + it * 4 * KPW + kl;
        if (f < nfl) {  // uniform across the warp
          if (ch < NCH) {
            const T* e = reinterpret_cast<const T*>(&raw[u]);
#pragma unroll
            for (int g = 0; g < kMaxG; g++)
              if (g < gh)
#pragma unroll
                for (int i = 0; i < VN; i++) d[g] += qs[g][ch * VN + i] * to_f(e[i]);
          }
          if (ci == CPL - 1) {  // the key's last chunk: reduce over its LPK lanes
#pragma unroll
            for (int g = 0; g < kMaxG; g++)
              for (int o = LPK / 2; o > 0; o >>= 1) d[g] += __shfl_xor_sync(0xffffffffu, d[g], o);
            if (cl == 0)
#pragma unroll
              for (int g = 0; g < kMaxG; g++)
                if (g < gh) sc[g][kk] = kk < nk ? d[g] : -INFINITY;
#pragma unroll
            for (int g = 0; g < kMaxG; g++) d[g] = 0.f;
          }
        }
      }
    }
    __syncthreads();
    for (int g = warp; g < gh; g += kDecThreads / 32) {  // online softmax, one warp per head
      const float s0 = sc[g][lane], s1 = sc[g][lane + 32];
      const float m_old = m_s[g], m_new = fmaxf(m_old, warp_max(fmaxf(s0, s1)));  // finite: nk >= 1
      const float p0 = expf(s0 - m_new), p1 = expf(s1 - m_new);
      sc[g][lane] = p0;
      sc[g][lane + 32] = p1;
      const float sum = warp_sum(p0 + p1);
      if (lane == 0) {
        const float al = expf(m_old - m_new);
        alpha_s[g] = al;
        l_s[g] = l_s[g] * al + sum;
        m_s[g] = m_new;
      }
    }
    __syncthreads();
    if (kl2 < NKL) {
#pragma unroll
      for (int g = 0; g < kMaxG; g++) {
        const float al = g < gh ? alpha_s[g] : 0.f;
#pragma unroll
        for (int i = 0; i < VN; i++) acc[g][i] *= al;
      }
      // PV phase: kDecPF value chunks (keys kl2, kl2 + NKL, ...) loaded before the first is used.
      for (int kb0 = kl2; kb0 < nk; kb0 += NKL * kDecPF) {
        uint4 raw[kDecPF];
#pragma unroll
        for (int u = 0; u < kDecPF; u++) {
          const int kk = kb0 + u * NKL;
          raw[u] = kk < nk ? load_raw(kaddr(k0 + kk, 1), c) : zero;
        }
#pragma unroll
        for (int u = 0; u < kDecPF; u++) {
          const int kk = kb0 + u * NKL;
          if (kk < nk) {
            const T* e = reinterpret_cast<const T*>(&raw[u]);
#pragma unroll
            for (int g = 0; g < kMaxG; g++)
              if (g < gh) {
                const float p = sc[g][kk];
#pragma unroll
                for (int i = 0; i < VN; i++) acc[g][i] += p * to_f(e[i]);
              }
          }
        }
      }
    }
    __syncthreads();
  }

  if (kl2 < NKL)
#pragma unroll
    for (int g = 0; g < kMaxG; g++)
      if (g < gh)
#pragma unroll
        for (int i = 0; i < VN; i++) red[(kl2 * kMaxG + g) * DP + c * VN + i] = acc[g][i];
  __syncthreads();
  T* out = static_cast<T*>(a.out);
  float* part = a.ws + (size_t(group) * splits + split) * gcta * (D + 2);  // [gcta][D + 2]
  for (int e = tid; e < gh * D; e += kDecThreads) {
    const int g = e / D, dd = e % D;
    float o = 0.f;
    for (int k = 0; k < NKL; k++) o += red[(k * kMaxG + g) * DP + dd];
    if (splits == 1) out[(int64_t(t) * a.nh + h0 + g) * D + dd] = from_f<T>(o / l_s[g]);
    else part[g * (D + 2) + dd] = o;
  }
  if (splits == 1) return;
  if (tid < gh) {
    part[tid * (D + 2) + D] = m_s[tid];
    part[tid * (D + 2) + D + 1] = l_s[tid];
  }
  __threadfence();
  __syncthreads();
  if (tid == 0) is_last = atomicAdd(a.counters + group, 1) == splits - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  const float* all = a.ws + size_t(group) * splits * gcta * (D + 2);  // [splits][gcta][D + 2]
  for (int e = tid; e < gh * D; e += kDecThreads) {
    const int g = e / D, dd = e % D;
    float M = -INFINITY;
    for (int s = 0; s < splits; s++) M = fmaxf(M, __ldcg(all + (size_t(s) * gcta + g) * (D + 2) + D));
    float L = 0.f, O = 0.f;
    for (int s = 0; s < splits; s++) {
      const float* ps = all + (size_t(s) * gcta + g) * (D + 2);
      const float w = expf(__ldcg(ps + D) - M);  // empty split: m = -inf, weight 0
      L += __ldcg(ps + D + 1) * w;
      O += __ldcg(ps + dd) * w;
    }
    out[(int64_t(t) * a.nh + h0 + g) * D + dd] = from_f<T>(O / L);
  }
  if (tid == 0) a.counters[group] = 0;
}

template <typename T, int D>
__global__ void __launch_bounds__(128) attn_prefill_kernel(AttnArgs a) {
  constexpr int BR = 64, BC = 64, LD = D + 8, NTH = 128, CPR = D / 8;
  LP_DYN_SMEM(uint4, smem_raw);
  T* Qs = reinterpret_cast<T*>(smem_raw);  // [BR][LD]
  T* Ks = Qs + BR * LD;                    // [2][BC][LD]
  T* Vs = Ks + 2 * BC * LD;                // [2][BC][LD]
  const AttnTile tile = a.tiles[blockIdx.x];
  const int h = blockIdx.y, kvh = h / (a.nh / a.nkv), bs = a.block_size;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q = lane & 3;
  const int p0 = a.positions[tile.tok0], plast = p0 + tile.ntok - 1;
  const int kstart = a.window > 0 ? max(0, p0 - a.window + 1) : 0;
  const int* table = a.block_table + a.seg_block_off[tile.seg];
  const T* kv = static_cast<const T*>(a.kv);
  const int64_t kind_stride = int64_t(a.nkv) * bs * D;
  const float qscale = a.scale * 1.4426950408889634f;  // softmax in base 2

  for (int e = tid; e < BR * D; e += NTH) {
    const int r = e / D, d = e % D;
    const float v = r < tile.ntok ? a.q[(int64_t(tile.tok0 + r) * a.nh + h) * D + d] * qscale : 0.f;
    Qs[r * LD + d] = from_f<T>(v);
  }
  auto load_kv = [&](int buf, int k0) {
    for (int i = tid; i < BC * CPR; i += NTH) {
      const int r = i / CPR, c = i % CPR, p = k0 + r;
      const bool ok = p <= plast;
      const T* src = ok ? kv + (((int64_t(table[p / bs]) * a.layers + a.layer) * 2 * a.nkv + kvh) * bs + p % bs) * D + c * 8 : kv;
      cp_async16(Ks + (buf * BC + r) * LD + c * 8, src, ok);
      cp_async16(Vs + (buf * BC + r) * LD + c * 8, ok ? src + kind_stride : kv, ok);
    }
  };
  const int ntiles = (plast - kstart) / BC + 1;
  load_kv(0, kstart);
  cp_async_commit();
  __syncthreads();
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) ldmatrix_x4(qf[kk], Qs + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.f, 0.f};
  const int qp[2] = {p0 + warp * 16 + g, p0 + warp * 16 + g + 8};
  const int qf0[2] = {a.window > 0 ? max(0, qp[0] - a.window + 1) : 0, a.window > 0 ? max(0, qp[1] - a.window + 1) : 0};

  for (int it = 0; it < ntiles; it++) {
    const int k0 = kstart + it * BC;
    if (it + 1 < ntiles) load_kv((it + 1) & 1, k0 + BC);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    const T* ks = Ks + (it & 1) * BC * LD;
    const T* vs = Vs + (it & 1) * BC * LD;
    float s[BC / 8][4];
#pragma unroll
    for (int i = 0; i < BC / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
      for (int np = 0; np < BC / 16; np++) {
        uint32_t b[4];
        ldmatrix_x4(b, ks + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
        mma16816<T>(s[2 * np], qf[kk], b[0], b[1]);
        mma16816<T>(s[2 * np + 1], qf[kk], b[2], b[3]);
      }
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < BC / 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int row = e >> 1, kp = k0 + nt * 8 + 2 * q + (e & 1);
        if (kp > qp[row] || kp < qf0[row]) s[nt][e] = -INFINITY;
        mx[row] = fmaxf(mx[row], s[nt][e]);
      }
    float alpha[2], m_use[2];
#pragma unroll
    for (int row = 0; row < 2; row++) {
      mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 1));
      mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 2));
      const float m_new = fmaxf(m_r[row], mx[row]);
      m_use[row] = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing visible yet stays empty
      alpha[row] = exp2f(m_r[row] - m_use[row]);
      m_r[row] = m_new;
      l_r[row] *= alpha[row];
    }
#pragma unroll
    for (int nt = 0; nt < BC / 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[nt][e] = exp2f(s[nt][e] - m_use[e >> 1]);
        l_r[e >> 1] += s[nt][e];
      }
#pragma unroll
    for (int i = 0; i < D / 8; i++) {
      o[i][0] *= alpha[0]; o[i][1] *= alpha[0];
      o[i][2] *= alpha[1]; o[i][3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < BC / 16; kk++) {
      // The S accumulators of key tiles 2kk, 2kk+1 are exactly the A fragment of P for k-step kk.
      const uint32_t pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                              pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, vs + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + dp * 16 + (lane >> 4) * 8);
        mma16816<T>(o[2 * dp], pa, b[0], b[1]);
        mma16816<T>(o[2 * dp + 1], pa, b[2], b[3]);
      }
    }
    __syncthreads();  // the buffer just read is refilled two iterations on
  }
  cp_async_wait<0>();
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int row = 0; row < 2; row++) {
    l_r[row] += __shfl_xor_sync(0xffffffffu, l_r[row], 1);
    l_r[row] += __shfl_xor_sync(0xffffffffu, l_r[row], 2);
    const int r = warp * 16 + g + row * 8;
    if (r < tile.ntok) {
      const float inv = 1.f / l_r[row];
      T* dst = out + (int64_t(tile.tok0 + r) * a.nh + h) * D;
#pragma unroll
      for (int i = 0; i < D / 8; i++) {
        dst[i * 8 + 2 * q] = from_f<T>(o[i][row * 2] * inv);
        dst[i * 8 + 2 * q + 1] = from_f<T>(o[i][row * 2 + 1] * inv);
      }
    }
  }
}

int group_cta(int nh, int nkv) { return std::min(nh / nkv, kMaxG); }

template <typename T, int D>
void launch_prefill(const AttnArgs& a, cudaStream_t st) {
  constexpr int smem = (64 + 4 * 64) * (D + 8) * int(sizeof(T));
  static bool configured = false;
  if (!configured) {
    check(cudaFuncSetAttribute(reinterpret_cast<const void*>(&attn_prefill_kernel<T, D>), cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "attention smem attribute");
    configured = true;
  }
  LP_LAUNCH(dim3(a.n_tiles, a.nh), 128, smem, st, attn_prefill_kernel<T, D>)(a);
}

}  // namespace

int attn_decode_splits(int n_tok, int nh, int nkv, int num_sms) {
  const int gc = group_cta(nh, nkv), nsub = (nh / nkv + gc - 1) / gc;
  const int groups = std::max(1, n_tok * nkv * nsub);
  return std::max(1, std::min(32, (2 * num_sms + groups - 1) / groups));
}

AttnNeeds attn_decode_needs(int n_tok, int nh, int nkv, int D, int splits) {
  AttnNeeds n;
  if (splits <= 1) return n;
  const int gc = group_cta(nh, nkv), nsub = (nh / nkv + gc - 1) / gc;
  n.counters = n_tok * nkv * nsub;
  n.ws_floats = size_t(n.counters) * splits * gc * (D + 2);
  return n;
}

void attention_decode(const AttnArgs& a, cudaStream_t st) {
  if (a.n_tok <= 0) return;
  const int gc = group_cta(a.nh, a.nkv), nsub = (a.nh / a.nkv + gc - 1) / gc;
  const dim3 grid(a.n_tok * a.nkv * nsub, a.splits);
  switch (a.ty) {
    case Ty::F32: LP_LAUNCH(grid, kDecThreads, 0, st, attn_decode_kernel<float>)(a, nsub, gc); break;
    case Ty::F16: LP_LAUNCH(grid, kDecThreads, 0, st, attn_decode_kernel<__half>)(a, nsub, gc); break;
    case Ty::BF16: LP_LAUNCH(grid, kDecThreads, 0, st, attn_decode_kernel<__nv_bfloat16>)(a, nsub, gc); break;
  }
  check_launch("attention_decode");
}

bool attention_prefill_supported(Ty ty, int D) { return ty != Ty::F32 && (D == 64 || D == 128); }

void attention_prefill(const AttnArgs& a, cudaStream_t st) {
  if (a.n_tiles <= 0) return;
  if (a.ty == Ty::BF16) {
    if (a.D == 64) launch_prefill<__nv_bfloat16, 64>(a, st);
    else launch_prefill<__nv_bfloat16, 128>(a, st);
  } else {
    if (a.D == 64) launch_prefill<__half, 64>(a, st);
    else launch_prefill<__half, 128>(a, st);
  }
  check_launch("attention_prefill");
}

}  // namespace cu
}  // namespace lp
