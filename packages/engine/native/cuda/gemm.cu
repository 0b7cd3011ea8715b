// y[M, N] (+)= x[M, K] @ W[N, K]^T on tensor cores (bf16/f16 in, f32 accumulate), three kernels:
//  - gemv_mma:  M <= 16 (decode). Memory-bound: each warp streams 16 weight rows with 16-byte
//               loads straight into mma A fragments (no shared memory); the 8 warps of a CTA split
//               K and are summed in a fixed order (deterministic).
//  - gemm_mma:  tiled, cp.async multi-stage pipeline, ldmatrix + mma.sync m16n8k16; split-K with a
//               "last CTA reduces" epilogue (deterministic) when there are too few output tiles.
//  - gemm_simt: float32 models (tests) and K not a multiple of 8 (unaligned rows).
// All three may carry LoRA shrink CTAs (lora_shrink.cuh), placed before the GEMM CTAs.
// Each states its blocks per SM in __launch_bounds__: the shrink code it inlines wants many
// registers (loads kept in flight), and without a stated budget ptxas picked one per build (80 to
// 168 registers) and spilled at some. The budgets are the occupancy each kernel had before the
// shrink grew (sm_90, -Xptxas=-v): gemv and SIMT 2 x 256 threads, 128x128 tiles 1, 64x64 tiles 5.
#include <algorithm>

#include "common.cuh"
#include "kernels.h"
#include "lora_shrink.cuh"

namespace lp {
namespace cu {

// ---------------------------------------------------------------------------------------------
// GEMV-style: weights are the A operand (16 output rows), the <= 8*NT tokens the B operand.
// Thread (g = lane/4, q = lane%4) loads 8 consecutive k of rows g and g+8 and of token g; the
// mma's k-slots {2q, 2q+1, 2q+8, 2q+9} are mapped to 4 of those k (a permutation of k that A and B
// share, so the dot products are unchanged).
template <typename T, int NT>
__global__ void __launch_bounds__(256, 2) gemv_mma_kernel(GemmArgs a, int gemm_ctas) {
  const int bid = gemm_cta_or_shrink<T>(a, gemm_ctas);
  if (bid < 0) return;
  __shared__ float red[8][16][NT * 8 + 1];  // [warp][row][token] partial sums
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
  const int K = a.K, N = a.N, M = a.M, n0 = bid * 16;
  const T* W = static_cast<const T*>(a.w);
  const T* X = static_cast<const T*>(a.x);
  const T* w0 = W + int64_t(min(n0 + g, N - 1)) * K;      // rows past N are clamped, results dropped
  const T* w1 = W + int64_t(min(n0 + g + 8, N - 1)) * K;
  const int nchunks = (K + 31) / 32, per_warp = (nchunks + 7) / 8;
  const int c_begin = warp * per_warp, c_end = min(nchunks, c_begin + per_warp);
  float c[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; nt++) c[nt][0] = c[nt][1] = c[nt][2] = c[nt][3] = 0.f;
  constexpr int U = 4;  // k-chunks of 32 in flight per thread: 8 x 16-byte weight loads
  const uint4 zero = make_uint4(0, 0, 0, 0);
  for (int c0 = c_begin; c0 < c_end; c0 += U) {
    uint4 wa[U], wb[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int k = (c0 + u) * 32 + q * 8;
      const bool ok = c0 + u < c_end && k + 8 <= K;
      wa[u] = ok ? ld_stream(w0 + k) : zero;
      wb[u] = ok ? ld_stream(w1 + k) : zero;
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int k = (c0 + u) * 32 + q * 8;
      const bool ok = c0 + u < c_end && k + 8 <= K;
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const int tok = nt * 8 + g;
        const uint4 xv = (ok && tok < M) ? *reinterpret_cast<const uint4*>(X + int64_t(tok) * K + k) : zero;
        const uint32_t a1[4] = {wa[u].x, wb[u].x, wa[u].y, wb[u].y};
        mma16816<T>(c[nt], a1, xv.x, xv.y);
        const uint32_t a2[4] = {wa[u].z, wb[u].z, wa[u].w, wb[u].w};
        mma16816<T>(c[nt], a2, xv.z, xv.w);
      }
    }
  }
  // c[nt]: {0,1} = (row g, tokens nt*8 + 2q, +1), {2,3} = (row g + 8, same tokens)
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
    red[warp][g][nt * 8 + 2 * q] = c[nt][0];
    red[warp][g][nt * 8 + 2 * q + 1] = c[nt][1];
    red[warp][g + 8][nt * 8 + 2 * q] = c[nt][2];
    red[warp][g + 8][nt * 8 + 2 * q + 1] = c[nt][3];
  }
  __syncthreads();
  for (int p = threadIdx.x; p < 16 * NT * 8; p += blockDim.x) {
    const int row = p & 15, tok = p >> 4, n = n0 + row;
    if (tok < M && n < N) {
      float s = 0.f;
#pragma unroll
      for (int w = 0; w < 8; w++) s += red[w][row][tok];
      float* y = a.y + int64_t(tok) * a.ldy + n;
      *y = a.accumulate ? *y + s : s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tiled tensor-core GEMM. Block tile BM x BN, k-step 32, WM x WN warps, STAGES-deep cp.async ring.
// Shared rows are padded to 40 elements (80 bytes) so ldmatrix reads are bank-conflict free.
template <typename T, int BM, int BN, int WM, int WN, int STAGES>
__global__ void __launch_bounds__(WM * WN * 32, BM * BN >= 128 * 128 ? 1 : 5)
gemm_mma_kernel(GemmArgs a, int gemm_ctas, int tiles_n, int splits, int kchunk, float* ws, int* counters) {
  const int bid = gemm_cta_or_shrink<T>(a, gemm_ctas);
  if (bid < 0) return;
  constexpr int BK = 32, LDS = BK + 8, NTH = WM * WN * 32;
  constexpr int WTM = BM / WM, WTN = BN / WN, MT = WTM / 16, NTL = WTN / 8;
  LP_DYN_SMEM(uint4, smem_raw);
  T* As = reinterpret_cast<T*>(smem_raw);  // [STAGES][BM][LDS]
  T* Bs = As + STAGES * BM * LDS;          // [STAGES][BN][LDS]
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wm = warp / WN, wn = warp % WN;
  const int tile = bid / splits, split = bid % splits;
  const int m0 = (tile / tiles_n) * BM, n0 = (tile % tiles_n) * BN;
  const int M = a.M, N = a.N, K = a.K;
  const int kbeg = split * kchunk, kend = min(K, kbeg + kchunk);
  const int nk = (kend - kbeg + BK - 1) / BK;
  const T* X = static_cast<const T*>(a.x);
  const T* W = static_cast<const T*>(a.w);

  auto load_stage = [&](int s, int kt) {
    const int k0 = kbeg + kt * BK;
    for (int i = tid; i < BM * 4; i += NTH) {
      const int r = i >> 2, k = k0 + (i & 3) * 8, gm = m0 + r;
      const bool ok = gm < M && k < kend;
      cp_async16(As + (s * BM + r) * LDS + (i & 3) * 8, ok ? X + int64_t(gm) * K + k : X, ok);
    }
    for (int i = tid; i < BN * 4; i += NTH) {
      const int r = i >> 2, k = k0 + (i & 3) * 8, gn = n0 + r;
      const bool ok = gn < N && k < kend;
      cp_async16(Bs + (s * BN + r) * LDS + (i & 3) * 8, ok ? W + int64_t(gn) * K + k : W, ok);
    }
  };

  float c[MT][NTL][4];
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NTL; j++) c[i][j][0] = c[i][j][1] = c[i][j][2] = c[i][j][3] = 0.f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < nk) load_stage(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < nk; kt++) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // stage kt landed for everyone; stage kt-1 is no longer read
    if (kt + STAGES - 1 < nk) load_stage((kt + STAGES - 1) % STAGES, kt + STAGES - 1);
    cp_async_commit();
    const T* as = As + (kt % STAGES) * BM * LDS;
    const T* bs = Bs + (kt % STAGES) * BN * LDS;
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) {
      uint32_t af[MT][4], bf[NTL / 2][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
        ldmatrix_x4(af[mt], as + (wm * WTM + mt * 16 + (lane & 15)) * LDS + kk * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int np = 0; np < NTL / 2; np++)
        ldmatrix_x4(bf[np], bs + (wn * WTN + np * 16 + (lane >> 4) * 8 + (lane & 7)) * LDS + kk * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NTL; nt++) mma16816<T>(c[mt][nt], af[mt], bf[nt / 2][(nt & 1) * 2], bf[nt / 2][(nt & 1) * 2 + 1]);
    }
  }
  cp_async_wait<0>();

  const int g = lane >> 2, q = lane & 3;
  if (splits > 1) {
    // Park this split's partial tile in register order, then the last CTA to arrive sums all
    // splits in split order (the same order whoever arrives last) and writes y.
    constexpr int NREG = MT * NTL * 4;
    float* part = ws + size_t(tile) * splits * (BM * BN);
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
      for (int j = 0; j < NTL; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) part[size_t(split) * BM * BN + ((i * NTL + j) * 4 + e) * NTH + tid] = c[i][j][e];
    __threadfence();
    __shared__ int is_last;
    __syncthreads();
    if (tid == 0) is_last = atomicAdd(counters + tile, 1) == splits - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
#pragma unroll
    for (int r = 0; r < NREG; r++) c[r / (NTL * 4)][(r / 4) % NTL][r % 4] = 0.f;
    for (int s = 0; s < splits; s++)
#pragma unroll
      for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NTL; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) c[i][j][e] += __ldcg(part + size_t(s) * BM * BN + ((i * NTL + j) * 4 + e) * NTH + tid);
    if (tid == 0) counters[tile] = 0;
  }
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NTL; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int gm = m0 + wm * WTM + i * 16 + g + (e >> 1) * 8, gn = n0 + wn * WTN + j * 8 + 2 * q + (e & 1);
        if (gm < M && gn < N) {
          float* y = a.y + int64_t(gm) * a.ldy + gn;
          *y = a.accumulate ? *y + c[i][j][e] : c[i][j][e];
        }
      }
}

// ---------------------------------------------------------------------------------------------
// SIMT fallback: 64x64 tile, k-step 16, 256 threads with a 4x4 register tile each.
template <typename T>
__global__ void __launch_bounds__(256, 2) gemm_simt_kernel(GemmArgs a, int gemm_ctas, int tiles_n) {
  const int bid = gemm_cta_or_shrink<T>(a, gemm_ctas);
  if (bid < 0) return;
  __shared__ float As[16][64 + 4], Ws[16][64 + 4];  // [k][m], [k][n]
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int m0 = (bid / tiles_n) * 64, n0 = (bid % tiles_n) * 64;
  const int M = a.M, N = a.N, K = a.K;
  const T* X = static_cast<const T*>(a.x);
  const T* W = static_cast<const T*>(a.w);
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += 16) {
    for (int e = tid; e < 64 * 16; e += 256) {
      const int r = e >> 4, k = e & 15;
      As[k][r] = (m0 + r < M && k0 + k < K) ? to_f(X[int64_t(m0 + r) * K + k0 + k]) : 0.f;
      Ws[k][r] = (n0 + r < N && k0 + k < K) ? to_f(W[int64_t(n0 + r) * K + k0 + k]) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < 16; k++) {
      float av[4], wv[4];
#pragma unroll
      for (int i = 0; i < 4; i++) { av[i] = As[k][ty * 4 + i]; wv[i] = Ws[k][tx * 4 + i]; }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += av[i] * wv[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int gm = m0 + ty * 4 + i, gn = n0 + tx * 4 + j;
      if (gm < M && gn < N) {
        float* y = a.y + int64_t(gm) * a.ldy + gn;
        *y = a.accumulate ? *y + acc[i][j] : acc[i][j];
      }
    }
}

// ---------------------------------------------------------------------------------------------
namespace {

enum class Path { Simt, Gemv, Small, Large };
struct Plan { Path path; int bm, bn, tiles_n, tiles, splits, kchunk; };

Plan plan_for(Ty ty, int M, int N, int K, int sms) {
  Plan p{};
  if (ty == Ty::F32 || K % 8 != 0) {
    p.path = Path::Simt; p.bm = p.bn = 64;
  } else if (M <= 16) {
    p.path = Path::Gemv; p.bm = 16; p.bn = 16;
    p.tiles_n = (N + 15) / 16; p.tiles = p.tiles_n; p.splits = 1;
    return p;
  } else if (M <= 64) {
    p.path = Path::Small; p.bm = 64; p.bn = 64;
  } else {
    p.path = Path::Large; p.bm = 128; p.bn = 128;
  }
  p.tiles_n = (N + p.bn - 1) / p.bn;
  p.tiles = p.tiles_n * ((M + p.bm - 1) / p.bm);
  p.splits = 1;
  p.kchunk = K;
  if (p.path != Path::Simt && p.tiles < sms) {
    // Split K until the grid covers the chip about twice; keep >= 4 k-steps of 32 per split.
    int s = std::min({(2 * sms + p.tiles - 1) / p.tiles, std::max(1, K / 128), 16});
    p.kchunk = ((K + s - 1) / s + 31) / 32 * 32;
    p.splits = (K + p.kchunk - 1) / p.kchunk;
  }
  return p;
}

int shrink_ctas(const ShrinkArgs& s) { return s.on ? s.max_items * s.nmod * s.rank_chunks : 0; }

template <typename T, int BM, int BN, int WM, int WN, int ST>
void launch_tiled(const GemmArgs& a, const Plan& p, const GemmScratch& s, cudaStream_t st) {
  constexpr int smem = ST * (BM + BN) * 40 * int(sizeof(T));
  static bool configured = false;  // raise the dynamic shared memory limit once per instantiation
  if (!configured) {
    check(cudaFuncSetAttribute(reinterpret_cast<const void*>(&gemm_mma_kernel<T, BM, BN, WM, WN, ST>), cudaFuncAttributeMaxDynamicSharedMemorySize, smem), "gemm smem attribute");
    configured = true;
  }
  const int ctas = p.tiles * p.splits;
  LP_LAUNCH(ctas + shrink_ctas(a.lora), WM * WN * 32, smem, st, gemm_mma_kernel<T, BM, BN, WM, WN, ST>)(a, ctas, p.tiles_n, p.splits, p.kchunk, s.ws, s.counters);
}

template <typename T>
void launch_typed(const GemmArgs& a, const Plan& p, const GemmScratch& s, cudaStream_t st) {
  const int extra = shrink_ctas(a.lora);
  switch (p.path) {
    case Path::Gemv:
      if (a.M <= 8) LP_LAUNCH(p.tiles + extra, 256, 0, st, gemv_mma_kernel<T, 1>)(a, p.tiles);
      else LP_LAUNCH(p.tiles + extra, 256, 0, st, gemv_mma_kernel<T, 2>)(a, p.tiles);
      break;
    case Path::Small: launch_tiled<T, 64, 64, 2, 2, 4>(a, p, s, st); break;
    case Path::Large: launch_tiled<T, 128, 128, 2, 4, 4>(a, p, s, st); break;
    default: break;
  }
}

}  // namespace

GemmNeeds gemm_needs(Ty ty, int M, int N, int K, int num_sms) {
  const Plan p = plan_for(ty, M, N, K, num_sms);
  GemmNeeds n;
  if (p.splits > 1) {
    n.ws_floats = size_t(p.tiles) * p.splits * p.bm * p.bn;
    n.counters = p.tiles;
  }
  return n;
}

void gemm(const GemmArgs& a, const GemmScratch& s, int num_sms, cudaStream_t st) {
  if (a.M <= 0 || a.N <= 0) return;
  const Plan p = plan_for(a.ty, a.M, a.N, a.K, num_sms);
  if (p.splits > 1 && (size_t(p.tiles) * p.splits * p.bm * p.bn > s.ws_floats || p.tiles > s.n_counters))
    throw EngineFailure("CUDA", "internal: GEMM split-K scratch too small");
  if (p.path == Path::Simt) {
    const int extra = shrink_ctas(a.lora);
    switch (a.ty) {
      case Ty::F32: LP_LAUNCH(p.tiles + extra, 256, 0, st, gemm_simt_kernel<float>)(a, p.tiles, p.tiles_n); break;
      case Ty::F16: LP_LAUNCH(p.tiles + extra, 256, 0, st, gemm_simt_kernel<__half>)(a, p.tiles, p.tiles_n); break;
      case Ty::BF16: LP_LAUNCH(p.tiles + extra, 256, 0, st, gemm_simt_kernel<__nv_bfloat16>)(a, p.tiles, p.tiles_n); break;
    }
  } else if (a.ty == Ty::BF16) {
    launch_typed<__nv_bfloat16>(a, p, s, st);
  } else {
    launch_typed<__half>(a, p, s, st);
  }
  check_launch("gemm");
}

}  // namespace cu
}  // namespace lp
