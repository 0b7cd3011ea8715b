// Sampling on the device, one CTA of 1024 threads per segment, reproducing cpu/sampler.cc:
// raw log-softmax (for returned log-probs), repetition / presence / frequency penalties, the
// allowed-token mask, then greedy argmax or temperature sampling truncated by top-k, min-p and
// top-p in vLLM's order, drawn with the same counter-based RNG (splitmix64 over (seed, draw)) from
// the same weights (sample_weight.h, bit-identical to the CPU's).
//
// Candidates are ordered by (logit desc, index asc) (cpu/sampler.cc states the rules). Top-k,
// top-p and the draw are each "the first element of that order where a running count or mass
// reaches a target", found by a 4-pass radix descent over the 32-bit order key (a 256-bucket
// histogram of count or mass per pass) that then settles ties by index; min-p is "the first
// element whose weight is below min_p", one block-wide minimum. Masses are summed in double as on
// the CPU; only the summation order differs (last-bit differences).
#include <climits>

#include "../cpu/sample_weight.h"
#include "common.cuh"
#include "kernels.h"
#include "../core/rng.h"  // uniform01: the CPU sampler's draws, bit for bit

namespace lp {
namespace cu {

namespace {

constexpr int kThreads = 1024;


// Ascending key == descending float value (-inf sorts last); -0 and +0 share a key, as they compare
// equal on the CPU (ties then go by index).
__device__ __forceinline__ uint32_t desc_key(float f) {
  uint32_t u = __float_as_uint(f);
  if (u == 0x80000000u) u = 0u;
  return ~((u & 0x80000000u) ? ~u : (u | 0x80000000u));
}

// A prefix of the sorted order: every element up to and including (key, idx).
struct Cut { uint32_t key; int idx; };
__device__ __forceinline__ bool in_cut(uint32_t k, int i, Cut c) { return k < c.key || (k == c.key && i <= c.idx); }

struct CountW { __device__ double operator()(float) const { return 1.0; } };
// Unnormalised weight of a candidate after temperature, as the CPU computes it.
struct WeightW {
  float mx, inv_t;
  __device__ double operator()(float f) const { return double(sample_weight(sample_z(f, mx, inv_t))); }
};

struct Shared {
  double hist[256];
  double dred[32];
  double tie[kThreads];
  unsigned long long ured[32];
  int ired[32];
  int sel, tie_thread;
  double sel_base;
};

__device__ unsigned long long block_min_u64(unsigned long long v, Shared& sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh.ured[threadIdx.x >> 5] = v;
  __syncthreads();
  v = sh.ured[threadIdx.x & 31];  // blockDim == 1024: 32 warps
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// First element e (in sorted order) of {finite, inside `bound`} whose inclusive running weight
// reaches `target` (>=, or > when strict). found = false when the whole set stays below it.
template <typename W>
__device__ Cut descend(const float* work, int V, Cut bound, W weight, double target, bool strict, bool& found, Shared& sh) {
  const int tid = threadIdx.x;
  uint32_t prefix = 0;
  double base = 0.0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    if (tid < 256) sh.hist[tid] = 0.0;
    __syncthreads();
    const uint32_t hi = shift == 24 ? 0u : (0xffffffffu << (shift + 8));
    for (int i = tid; i < V; i += kThreads) {
      const float f = work[i];
      if (f == -INFINITY) continue;
      const uint32_t k = desc_key(f);
      if (!in_cut(k, i, bound) || (k & hi) != (prefix & hi)) continue;
      atomicAdd(&sh.hist[(k >> shift) & 255], weight(f));
    }
    __syncthreads();
    if (tid == 0) {
      int sel = -1;
      double b = base;
      for (int j = 0; j < 256; j++) {
        const double nb = b + sh.hist[j];
        if (strict ? nb > target : nb >= target) { sel = j; break; }
        b = nb;
      }
      sh.sel = sel;
      sh.sel_base = b;
    }
    __syncthreads();
    if (sh.sel < 0) { found = false; return bound; }
    prefix |= uint32_t(sh.sel) << shift;
    base = sh.sel_base;
    __syncthreads();
  }
  // Ties on the full key: walk them in index order (each thread owns a contiguous chunk).
  const int chunk = (V + kThreads - 1) / kThreads, b0 = tid * chunk, b1 = min(V, b0 + chunk);
  double local = 0.0;
  for (int i = b0; i < b1; i++) {
    const float f = work[i];
    if (f != -INFINITY && desc_key(f) == prefix && in_cut(prefix, i, bound)) local += weight(f);
  }
  sh.tie[tid] = local;
  __syncthreads();
  if (tid == 0) {
    double b = base, b_last = base;
    int th = -1, last_nz = 0;
    for (int j = 0; j < kThreads; j++) {
      const double nb = b + sh.tie[j];
      if (sh.tie[j] > 0.0) { last_nz = j; b_last = b; }
      if (strict ? nb > target : nb >= target) { th = j; break; }
      b = nb;
    }
    // Rounding can leave the sequential sum a hair below the histogram's: take the last tie.
    sh.tie_thread = th >= 0 ? th : last_nz;
    sh.sel_base = th >= 0 ? b : b_last;
  }
  __syncthreads();
  Cut res{prefix, INT_MAX};
  if (tid == sh.tie_thread) {
    double b = sh.sel_base;
    int last = -1;
    for (int i = b0; i < b1; i++) {
      const float f = work[i];
      if (f != -INFINITY && desc_key(f) == prefix && in_cut(prefix, i, bound)) {
        last = i;
        b += weight(f);
        if (strict ? b > target : b >= target) break;
      }
    }
    sh.ired[0] = last;
  }
  __syncthreads();
  res.idx = sh.ired[0];
  __syncthreads();
  found = res.idx >= 0;
  return found ? res : bound;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(SampleArgs a) {
  __shared__ Shared sh;
  __shared__ float fred[32];
  const int seg = blockIdx.x, tid = threadIdx.x, V = a.V, maxtop = *a.max_top;
  const int row = a.sample_row[seg];
  if (row < 0) {
    if (tid == 0) { a.token[seg] = -1; a.logprob[seg] = 0.f; a.error[seg] = 0; }
    for (int j = tid; j < maxtop; j += kThreads) { a.top_ids[seg * maxtop + j] = -1; a.top_lp[seg * maxtop + j] = 0.f; }
    return;
  }
  const float* raw = a.logits + int64_t(row) * V;  // [V]
  float* work = a.work + int64_t(seg) * V;         // [V]
  const SampleParamsDev p = a.params[seg];
  const int words = (V + 31) / 32;

  // Raw log-softmax (the distribution returned log-probs refer to).
  float mx = -INFINITY;
  for (int i = tid; i < V; i += kThreads) mx = fmaxf(mx, raw[i]);
  mx = block_max(mx, fred);
  double se = 0.0;
  for (int i = tid; i < V; i += kThreads) se += exp(double(raw[i]) - mx);
  se = block_sum_d(se, sh.dred);
  const float lse = mx + float(log(se));

  const uint32_t* mask = a.seg_mask[seg] >= 0 ? a.masks + size_t(a.seg_mask[seg]) * words : nullptr;
  int any = 0;
  for (int i = tid; i < V; i += kThreads) {
    float w = raw[i];
    if (mask && !((mask[i >> 5] >> (i & 31)) & 1u)) w = -INFINITY;
    else any = 1;
    work[i] = w;
  }
  any = __syncthreads_or(any);
  if (!any) {
    if (tid == 0) { a.error[seg] = 1; a.token[seg] = -1; a.logprob[seg] = 0.f; }
    for (int j = tid; j < maxtop; j += kThreads) { a.top_ids[seg * maxtop + j] = -1; a.top_lp[seg * maxtop + j] = 0.f; }
    return;
  }
  // Penalties; the first thread to set a token's bit owns that token, so each applies once.
  if (p.rep != 1.f || p.pres != 0.f || p.freq != 0.f) {
    uint32_t* seen = a.bits + size_t(seg) * 2 * words;  // [words] any history, [words] generated
    uint32_t* gseen = seen + words;
    for (int w = tid; w < 2 * words; w += kThreads) seen[w] = 0u;
    __syncthreads();
    const int hb = a.hist_off[seg], he = a.hist_off[seg + 1], gs = hb + a.gen_start[seg];
    if (p.rep != 1.f)
      for (int i = hb + tid; i < he; i += kThreads) {
        const int t = a.hist[i];
        const uint32_t bit = 1u << (t & 31);
        if (!(atomicOr(seen + (t >> 5), bit) & bit)) {
          const float l = work[t];
          work[t] = l > 0.f ? l / p.rep : l * p.rep;
        }
      }
    __syncthreads();
    for (int i = gs + tid; i < he; i += kThreads) {
      const int t = a.hist[i];
      const uint32_t bit = 1u << (t & 31);
      if (!(atomicOr(gseen + (t >> 5), bit) & bit)) {
        int cnt = 0;
        for (int j = gs; j < he; j++) cnt += a.hist[j] == t;
        work[t] -= p.freq * float(cnt) + p.pres;
      }
    }
    __syncthreads();
  }

  int chosen;
  // Argmax (first maximum): the smallest (order key, index) pair.
  unsigned long long best = ~0ull;
  for (int i = tid; i < V; i += kThreads) best = min(best, (static_cast<unsigned long long>(desc_key(work[i])) << 32) | unsigned(i));
  best = block_min_u64(best, sh);
  const int top = int(best & 0xffffffffu);
  if (p.temperature <= 0.f) {
    chosen = top;
  } else {
    int nf = 0;
    for (int i = tid; i < V; i += kThreads) nf += work[i] != -INFINITY;
    if (tid == 0) sh.ired[1] = 0;
    __syncthreads();
    atomicAdd(&sh.ired[1], nf);
    __syncthreads();
    const int n_fin = sh.ired[1];
    const int k = (p.top_k > 0 && p.top_k < V) ? p.top_k : V;
    const Cut all{0xffffffffu, INT_MAX};
    bool found = true;
    const CountW count;
    const Cut cand = k < n_fin ? descend(work, V, all, count, double(k), false, found, sh) : all;
    const WeightW weight{work[top], 1.f / p.temperature};  // IEEE division, as the CPU
    auto mass = [&](Cut c) {
      double s = 0.0;
      for (int i = tid; i < V; i += kThreads) {
        const float f = work[i];
        if (f != -INFINITY && in_cut(desc_key(f), i, c)) s += weight(f);
      }
      return block_sum_d(s, sh.dred);
    };
    const double z = mass(cand);
    Cut keep = cand;
    if (p.min_p > 0.f) {
      // Up to (excluding) the first candidate whose weight is below min_p (the top weighs 1).
      unsigned long long first = ~0ull;
      for (int i = tid; i < V; i += kThreads) {
        const float f = work[i];
        const uint32_t key = desc_key(f);
        if (f != -INFINITY && in_cut(key, i, cand) && weight(f) < double(p.min_p))
          first = min(first, (static_cast<unsigned long long>(key) << 32) | unsigned(i));
      }
      first = block_min_u64(first, sh);
      if (first != ~0ull) keep = Cut{uint32_t(first >> 32), int(first & 0xffffffffu) - 1};
    }
    if (p.top_p < 1.f) keep = descend(work, V, keep, weight, double(p.top_p) * z, false, found, sh);
    const double u = uniform01(p.seed, uint64_t(p.draw)) * mass(keep);
    const Cut ch = descend(work, V, keep, weight, u, true, found, sh);
    if (found) {
      chosen = ch.idx;
    } else {  // rounding left u above the running mass: the last candidate of positive weight
      unsigned long long last = ~0ull;
      for (int i = tid; i < V; i += kThreads) {
        const float f = work[i];
        const uint32_t key = desc_key(f);
        if (f != -INFINITY && in_cut(key, i, keep) && weight(f) > 0.0)
          last = min(last, ~((static_cast<unsigned long long>(key) << 32) | unsigned(i)));
      }
      chosen = int(~block_min_u64(last, sh) & 0xffffffffu);
    }
  }

  // Top-n alternatives of the raw distribution, extracted in order (raw log-prob desc, index asc).
  const int n = min(p.top_logprobs, V);
  unsigned long long prev = 0;
  for (int r = 0; r < n; r++) {
    unsigned long long b = ~0ull;
    for (int i = tid; i < V; i += kThreads) {
      const unsigned long long c = (static_cast<unsigned long long>(desc_key(raw[i] - lse)) << 32) | unsigned(i);
      if ((r == 0 || c > prev) && c < b) b = c;
    }
    b = block_min_u64(b, sh);
    prev = b;
    if (tid == 0) {
      const int id = int(b & 0xffffffffu);
      a.top_ids[seg * maxtop + r] = id;
      a.top_lp[seg * maxtop + r] = raw[id] - lse;
    }
  }
  for (int j = n + tid; j < maxtop; j += kThreads) { a.top_ids[seg * maxtop + j] = -1; a.top_lp[seg * maxtop + j] = 0.f; }
  if (tid == 0) {
    a.token[seg] = chosen;
    a.logprob[seg] = raw[chosen] - lse;
    a.error[seg] = 0;
  }
}

}  // namespace

void sample(const SampleArgs& a, cudaStream_t st) {
  if (a.S <= 0) return;
  LP_LAUNCH(a.S, kThreads, 0, st, sample_kernel)(a);
  check_launch("sample");
}

}  // namespace cu
}  // namespace lp
