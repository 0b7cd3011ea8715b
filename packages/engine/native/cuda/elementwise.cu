// Row-wise kernels around the projections: embedding lookup, residual + RMSNorm, bias + rotary +
// KV-cache append, SiLU gate, the segmented LoRA expand, and small utilities. In the decode path
// the LoRA expand (y += B v) is fused into the consumer of each projection's output (rope_kv for
// q/k/v, silu_mul for gate/up, resnorm for o/down), so adapters add no kernel launches.
#include "common.cuh"
#include "kernels.h"
#include "../core/rng.h"

namespace lp {
namespace cu {

namespace {

// Where the fused expand of (token t, module m) reads from; r == 0 when t has nothing to add.
struct ExpandRef { int r = 0; const int* pages = nullptr; const float* v = nullptr; };
__device__ __forceinline__ ExpandRef expand_ref(const FusedExpand& ex, int t, int m) {
  ExpandRef e;
  if (!ex.on) return e;
  const int slot = ex.tok_slot[t];
  if (slot < 0) return e;
  const LoraLayout& L = ex.lay;
  e.r = L.slot_rank[(slot * L.layers + ex.layer) * kMods + m];
  e.pages = L.slot_pages + slot * L.max_rank;
  e.v = ex.v + (int64_t(t) * kMods + m) * L.max_rank;
  return e;
}

template <typename T>
__global__ void embed_kernel(const T* table, const int* tokens, int H, float* x) {
  const T* row = table + int64_t(tokens[blockIdx.x]) * H;  // [H]
  float* dst = x + int64_t(blockIdx.x) * H;
  for (int i = threadIdx.x; i < H; i += blockDim.x) dst[i] = to_f(row[i]);
}

// One CTA per output row. x[t] (+)= LoRA expand, then out = w * x / rms(x) (as cpu rmsnorm).
template <typename T>
__global__ void __launch_bounds__(1024) resnorm_kernel(ResNormArgs a) {
  __shared__ float scratch[32];
  const int r = blockIdx.x, t = a.rows ? a.rows[r] : r, H = a.H;
  float* x = a.x + int64_t(t) * H;  // [H]
  const ExpandRef e = expand_ref(a.ex, t, a.mod);
  float ss = 0.f;
  for (int o = threadIdx.x; o < H; o += blockDim.x) {
    float val = x[o];
    if (e.r > 0) {
      val += lora_delta<T>(a.ex.lay, e.pages, e.r, e.v, a.ex.layer, a.mod, o);
      x[o] = val;
    }
    ss += val * val;
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / float(H) + a.eps);
  T* out = static_cast<T*>(a.out) + int64_t(r) * H;
  for (int o = threadIdx.x; o < H; o += blockDim.x) out[o] = from_f<T>(a.w[o] * (x[o] * inv));
}

// Grid (token, head slot): head slots are the nh query, nkv key and nkv value heads of the fused
// qkv row. Thread i handles the rotate-half pair (i, i + D/2). With q/k norms (Qwen3) a query or
// key head is first gathered (bias and LoRA added) into shared memory to take its RMS over D.
template <typename T>
__global__ void rope_kv_kernel(RopeArgs a) {
  __shared__ float head_vals[kMaxHeadDim];
  __shared__ float scratch[32];
  const int t = blockIdx.x, hs = blockIdx.y, D = a.D, half = D / 2, nh = a.nh, nkv = a.nkv;
  const int m = hs < nh ? kQ : (hs < nh + nkv ? kK : kV);
  const int head = m == kQ ? hs : (m == kK ? hs - nh : hs - nh - nkv);
  const float* row = a.qkv + int64_t(t) * (nh + 2 * nkv) * D + hs * D;  // [D]
  const ExpandRef e = expand_ref(a.ex, t, m);
  const int pos = a.positions[t];
  T* dst = nullptr;
  if (m != kQ) {
    const int block = a.block_table[a.seg_block_off[a.tok_seg[t]] + pos / a.block_size];
    // cache [blocks][layers][2][nkv][block_size][D]
    dst = static_cast<T*>(a.kv) + ((((int64_t(block) * a.layers + a.layer) * 2 + (m == kK ? 0 : 1)) * nkv + head) * a.block_size + pos % a.block_size) * D;
  }
  // Element j of this head: projection + bias + LoRA expand.
  auto value = [&](int j) {
    float x = row[j];
    if (a.bias) x += a.bias[hs * D + j];
    if (e.r > 0) x += lora_delta<T>(a.ex.lay, e.pages, e.r, e.v, a.ex.layer, m, head * D + j);
    return x;
  };
  // Uniform per CTA, so every thread reaches block_sum.
  const float* norm_w = m == kQ ? a.q_norm : (m == kK ? a.k_norm : nullptr);
  float inv_rms = 1.f;
  if (norm_w) {
    float ss = 0.f;
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
      const float x = value(j);
      head_vals[j] = x;
      ss += x * x;
    }
    ss = block_sum(ss, scratch);  // synchronises the CTA, so head_vals is complete
    inv_rms = 1.0f / sqrtf(ss / float(D) + a.eps);
  }
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float x1, x2;
    if (norm_w) {  // as cpu rmsnorm: w * (x * inv)
      x1 = norm_w[i] * (head_vals[i] * inv_rms);
      x2 = norm_w[i + half] * (head_vals[i + half] * inv_rms);
    } else {
      x1 = value(i);
      x2 = value(i + half);
    }
    float y1 = x1, y2 = x2;
    if (m != kV) {
      const float ang = float(pos) * a.inv_freq[i];
      const float c = cosf(ang), s = sinf(ang);
      y1 = x1 * c - x2 * s;
      y2 = x2 * c + x1 * s;
    }
    if (m == kQ) {
      float* qo = a.q + (int64_t(t) * nh + head) * D;
      qo[i] = y1;
      qo[i + half] = y2;
    } else {
      dst[i] = from_f<T>(y1);
      dst[i + half] = from_f<T>(y2);
    }
  }
}

template <typename T>
__global__ void silu_mul_kernel(const float* gu, T* act, int I, FusedExpand ex) {
  const int t = blockIdx.x, i = blockIdx.y * blockDim.x + threadIdx.x;
  if (i >= I) return;
  float g = gu[int64_t(t) * 2 * I + i], u = gu[int64_t(t) * 2 * I + I + i];
  const ExpandRef eg = expand_ref(ex, t, kGate), eu = expand_ref(ex, t, kUp);
  if (eg.r > 0) g += lora_delta<T>(ex.lay, eg.pages, eg.r, eg.v, ex.layer, kGate, i);
  if (eu.r > 0) u += lora_delta<T>(ex.lay, eu.pages, eu.r, eu.v, ex.layer, kUp, i);
  act[int64_t(t) * I + i] = from_f<T>(g / (1.0f + expf(-g)) * u);
}

// Segmented expand: CTA per (item, module) x 256 output columns; the item's tokens share every B
// element the CTA reads. v rows are staged in shared memory 64 ranks at a time.
template <typename T>
__global__ void __launch_bounds__(256) lora_expand_kernel(ExpandArgs a) {
  __shared__ float vs[kItemTokens][64];
  const int item = blockIdx.x / a.nmod, mi = blockIdx.x % a.nmod, m = a.mods[mi];
  const LoraItem it = a.items[item];
  const LoraLayout& L = a.lay;
  const int r = L.slot_rank[(it.slot * L.layers + a.layer) * kMods + m];
  const int o = blockIdx.y * blockDim.x + threadIdx.x;
  if (r == 0 || int(blockIdx.y) * int(blockDim.x) >= L.out[m]) return;  // uniform over the CTA
  const int* pages = L.slot_pages + it.slot * L.max_rank;
  const T* bcol = static_cast<const T*>(L.pool) + int64_t(a.layer) * L.layer_elems + L.mod_off[m] + L.in_pad[m] + o;
  float acc[kItemTokens];
#pragma unroll
  for (int t = 0; t < kItemTokens; t++) acc[t] = 0.f;
  for (int j0 = 0; j0 < r; j0 += 64) {
    const int nj = min(64, r - j0);
    __syncthreads();
    for (int e = threadIdx.x; e < it.ntok * 64; e += blockDim.x) {
      const int t = e / 64, jj = e % 64;
      vs[t][jj] = jj < nj ? a.v[(int64_t(it.tok0 + t) * kMods + m) * L.max_rank + j0 + jj] : 0.f;
    }
    __syncthreads();
    if (o < L.out[m]) {
      for (int jj = 0; jj < nj; jj++) {
        const float b = to_f(bcol[int64_t(pages[j0 + jj]) * L.page_elems]);
#pragma unroll
        for (int t = 0; t < kItemTokens; t++)
          if (t < it.ntok) acc[t] += vs[t][jj] * b;
      }
    }
  }
  if (o < L.out[m]) {
    const int64_t sl = int64_t(it.slot) * L.layers + a.layer;
    const bool dora = L.slot_dora_on && L.slot_dora_on[sl * kMods + m];
    const float g = dora ? L.slot_dora[sl * L.dora_layer_elems + L.dora_mod_off[m] + o] : 1.f;
#pragma unroll
    for (int t = 0; t < kItemTokens; t++)
      if (t < it.ntok) {
        float* y = a.y + int64_t(it.tok0 + t) * a.ldy + a.col_off[mi] + o;
        *y = dora ? g * (*y + acc[t]) : *y + acc[t];
      }
  }
}

__global__ void add_f32_kernel(float* x, const float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) x[i] += y[i];
}

template <typename T>
__global__ void fill_random_kernel(T* p, size_t n, uint64_t seed, float mean, float amp) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float u = float(splitmix64(seed ^ (i * kCounterSpread)) >> 40) * (1.0f / 16777216.0f);
    p[i] = from_f<T>(mean + amp * (2.f * u - 1.f));
  }
}
__global__ void copy_kernel(uint4* dst, const uint4* src, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) dst[i] = src[i];
}
__global__ void poison_kernel(uint32_t* p, size_t n, uint32_t v) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) p[i] = v;
}

int grid_for(size_t n, int threads) { return int(std::min<size_t>((n + threads - 1) / threads, 65536)); }

}  // namespace

#define LP_DISPATCH(ty, F) \
  switch (ty) { case Ty::F32: F(float); break; case Ty::F16: F(__half); break; case Ty::BF16: F(__nv_bfloat16); break; }

void embed(Ty ty, const void* table, const int* tokens, int M, int H, float* x, cudaStream_t st) {
  if (M <= 0) return;
#define L_(T) LP_LAUNCH(M, 256, 0, st, embed_kernel<T>)(static_cast<const T*>(table), tokens, H, x)
  LP_DISPATCH(ty, L_)
#undef L_
  check_launch("embed");
}

void resnorm(const ResNormArgs& a, cudaStream_t st) {
  if (a.nrows <= 0) return;
  // One CTA per row; few rows (decode) get 1024 threads so the fused LoRA expand, which reads
  // rank x H B elements per token, has more loads in flight.
  const int threads = a.nrows <= 64 ? 1024 : 256;
#define L_(T) LP_LAUNCH(a.nrows, threads, 0, st, resnorm_kernel<T>)(a)
  LP_DISPATCH(a.ty, L_)
#undef L_
  check_launch("resnorm");
}

void rope_kv(const RopeArgs& a, cudaStream_t st) {
  if (a.M <= 0) return;
  const dim3 grid(a.M, a.nh + 2 * a.nkv);
  const int threads = std::min(256, std::max(32, (a.D / 2 + 31) / 32 * 32));
#define L_(T) LP_LAUNCH(grid, threads, 0, st, rope_kv_kernel<T>)(a)
  LP_DISPATCH(a.ty, L_)
#undef L_
  check_launch("rope_kv");
}

void silu_mul(Ty ty, const float* gu, void* act, int M, int I, const FusedExpand& ex, cudaStream_t st) {
  if (M <= 0) return;
  const dim3 grid(M, (I + 255) / 256);
#define L_(T) LP_LAUNCH(grid, 256, 0, st, silu_mul_kernel<T>)(gu, static_cast<T*>(act), I, ex)
  LP_DISPATCH(ty, L_)
#undef L_
  check_launch("silu_mul");
}

void lora_expand(const ExpandArgs& a, cudaStream_t st) {
  if (a.n_items <= 0 || a.nmod <= 0) return;
  int max_out = 0;
  for (int i = 0; i < a.nmod; i++) max_out = std::max(max_out, a.lay.out[a.mods[i]]);
  const dim3 grid(a.n_items * a.nmod, (max_out + 255) / 256);
#define L_(T) LP_LAUNCH(grid, 256, 0, st, lora_expand_kernel<T>)(a)
  LP_DISPATCH(a.ty, L_)
#undef L_
  check_launch("lora_expand");
}

void add_f32(float* x, const float* y, int64_t n, cudaStream_t st) {
  if (n <= 0) return;
  LP_LAUNCH(grid_for(size_t(n), 256), 256, 0, st, add_f32_kernel)(x, y, n);
  check_launch("add_f32");
}

void fill_random(Ty ty, void* p, size_t n, uint64_t seed, float mean, float amp, cudaStream_t st) {
  if (n == 0) return;
#define L_(T) LP_LAUNCH(grid_for(n, 256), 256, 0, st, fill_random_kernel<T>)(static_cast<T*>(p), n, seed, mean, amp)
  LP_DISPATCH(ty, L_)
#undef L_
  check_launch("fill_random");
}

void copy_bytes(void* dst, const void* src, size_t bytes, cudaStream_t st) {
  const size_t n = bytes / 16;
  LP_LAUNCH(grid_for(n, 512), 512, 0, st, copy_kernel)(static_cast<uint4*>(dst), static_cast<const uint4*>(src), n);
  check_launch("copy_bytes");
}

void poison(void* p, size_t words, uint32_t pattern, cudaStream_t st) {
  if (words == 0) return;
  LP_LAUNCH(grid_for(words, 256), 256, 0, st, poison_kernel)(static_cast<uint32_t*>(p), words, pattern);
  check_launch("poison");
}

}  // namespace cu
}  // namespace lp
