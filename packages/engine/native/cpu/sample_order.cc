#include "sample_order.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "sample_weight.h"
#include "simd.h"

namespace lp {

namespace {

// Bucket of a candidate from its z (<= 0) and weight; the scalar twin of the AVX2 lanes below.
inline int bucket_of(float z, float w, float scale, int buckets) {
  if (w == 0.f) return buckets;
  return std::min(int(-z * scale), buckets - 1);
}

#ifdef LP_AVX2
// sample_weight over 8 lanes, bit-identical to the scalar function (same operations, same order).
inline __m256 sample_weight8(__m256 z) {
  const __m256 ok = _mm256_cmp_ps(z, _mm256_set1_ps(kMinSampleZ), _CMP_GE_OQ);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(z, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Hi), z);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-kLn2Lo), r);
  const __m256 r2 = _mm256_mul_ps(r, r);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(kExpP0), r, _mm256_set1_ps(kExpP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP5));
  __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(ok, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}
#endif

}  // namespace

void SampleOrder::build(const float* logits, int vocab, float temperature) {
  logits_ = logits;
  vocab_ = vocab;
  inv_t_ = 1.f / temperature;
  const float inf = std::numeric_limits<float>::infinity();
  float mx = -inf, mn = inf;
  int i = 0;
#ifdef LP_AVX2
  {
    __m256 vmax = _mm256_set1_ps(-inf), vmin = _mm256_set1_ps(inf);
    const __m256 vninf = _mm256_set1_ps(-inf), vinf = _mm256_set1_ps(inf);
    for (; i + 8 <= vocab; i += 8) {
      const __m256 l = _mm256_loadu_ps(logits + i);
      vmax = _mm256_max_ps(vmax, l);
      vmin = _mm256_min_ps(vmin, _mm256_blendv_ps(l, vinf, _mm256_cmp_ps(l, vninf, _CMP_EQ_OQ)));
    }
    float a[8], b[8];
    _mm256_storeu_ps(a, vmax);
    _mm256_storeu_ps(b, vmin);
    for (int j = 0; j < 8; j++) mx = std::max(mx, a[j]), mn = std::min(mn, b[j]);
  }
#endif
  for (; i < vocab; i++) {
    const float l = logits[i];
    mx = std::max(mx, l);
    mn = std::min(mn, l == -inf ? inf : l);
  }
  max_ = mx;
  // Equal-width buckets over z in [max(z_min, kMinSampleZ), 0]; one bucket when all are equal.
  const float z_lo = std::max(sample_z(mn, mx, inv_t_), kMinSampleZ);
  const int nb = buckets_ = std::min(kMaxBuckets, std::max(16, vocab / 64));
  const int stride = nb + 2, zero_b = nb, masked_b = nb + 1;
  const float scale = z_lo < 0.f ? float(nb - 1) / -z_lo : 0.f;

  bucket_.resize(size_t(vocab));
  // kCopies interleaved histograms: consecutive candidates often share a bucket, and one copy
  // would chain every update on the previous one's store.
  hist_.assign(size_t(kCopies) * size_t(stride), Bin{0.0, 0});
  for (int b : touched_) slot_[size_t(b)] = -1;
  slot_.resize(size_t(kMaxBuckets) + 2, -1);
  touched_.clear();

  float zs[8], ws[8];
  int bs[8];
  Bin* hist = hist_.data();
  auto scatter = [&](int i0, int n) {  // bs: buckets with masked candidates already marked
    for (int j = 0; j < n; j++) {
      const int b = bs[j];
      bucket_[size_t(i0 + j)] = uint16_t(b);
      Bin& h = hist[(j & (kCopies - 1)) * stride + b];
      h.mass += double(ws[j]);
      h.count++;
    }
  };
  i = 0;
#ifdef LP_AVX2
  const __m256 vmx = _mm256_set1_ps(mx), vt = _mm256_set1_ps(inv_t_), vscale = _mm256_set1_ps(scale);
  const __m256i vlast = _mm256_set1_epi32(nb - 1), vzero_b = _mm256_set1_epi32(zero_b),
                vmasked_b = _mm256_set1_epi32(masked_b);
  for (; i + 8 <= vocab; i += 8) {
    const __m256 l = _mm256_loadu_ps(logits + i);
    const __m256 z = _mm256_mul_ps(_mm256_sub_ps(l, vmx), vt);
    const __m256 w = sample_weight8(z);
    const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), z), vscale);
    __m256i b = _mm256_min_epi32(_mm256_cvttps_epi32(t), vlast);
    b = _mm256_blendv_epi8(b, vzero_b, _mm256_castps_si256(_mm256_cmp_ps(w, _mm256_setzero_ps(), _CMP_EQ_OQ)));
    b = _mm256_blendv_epi8(b, vmasked_b, _mm256_castps_si256(_mm256_cmp_ps(l, _mm256_set1_ps(-inf), _CMP_EQ_OQ)));
    _mm256_storeu_ps(ws, w);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(bs), b);
    scatter(i, 8);
  }
#endif
  for (; i < vocab; i += 8) {
    const int n = std::min(8, vocab - i);
    for (int j = 0; j < n; j++) {
      zs[j] = sample_z(logits[i + j], mx, inv_t_);
      ws[j] = sample_weight(zs[j]);
      bs[j] = logits[i + j] == -inf ? masked_b : bucket_of(zs[j], ws[j], scale, nb);
    }
    scatter(i, n);
  }
  mass_.assign(size_t(nb), 0.0);
  count_.assign(size_t(nb) + 1, 0);
  for (int c = 0; c < kCopies; c++)
    for (int b = 0; b <= nb; b++) {
      const Bin& h = hist[c * stride + b];
      if (b < nb) mass_[size_t(b)] += h.mass;
      count_[size_t(b)] += h.count;
    }
  positive_ = 0;
  for (int b = 0; b < nb; b++) positive_ += count_[size_t(b)];
  scale_ = scale;
}

const SampleOrder::Sorted& SampleOrder::sorted(int b) {
  if (slot_[size_t(b)] >= 0) return cache_[size_t(slot_[size_t(b)])];
  const size_t slot = touched_.size();
  touched_.push_back(b);
  slot_[size_t(b)] = int32_t(slot);
  if (cache_.size() <= slot) cache_.resize(slot + 1);
  Sorted& s = cache_[slot];
  s.idx.clear();
  s.w.clear();
  const uint16_t* bk = bucket_.data();
  int i = 0;
#ifdef LP_AVX2
  const __m256i vb = _mm256_set1_epi16(int16_t(b));
  for (; i + 16 <= vocab_; i += 16) {
    uint32_t m = uint32_t(_mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(bk + i)), vb)));
    while (m) {
      const int bit = __builtin_ctz(m);
      s.idx.push_back(i + bit / 2);
      m &= ~(3u << bit);
    }
  }
#endif
  for (; i < vocab_; i++)
    if (bk[i] == b) s.idx.push_back(i);
  // Collected in index order; the order wanted is logit desc, index asc.
  const float* l = logits_;
  std::stable_sort(s.idx.begin(), s.idx.end(), [l](int32_t a, int32_t c) { return l[a] > l[c]; });
  s.w.reserve(s.idx.size());
  for (int32_t k : s.idx) s.w.push_back(sample_weight(sample_z(l[k], max_, inv_t_)));
  return s;
}

SampleOrder::Pos SampleOrder::first_n(int64_t n) const {
  if (n >= positive_) return end();
  int64_t before = 0;
  for (int b = 0; b < buckets_; b++) {
    if (before + count_[size_t(b)] >= n) return Pos{b, int(n - before)};
    before += count_[size_t(b)];
  }
  return end();
}

double SampleOrder::mass(Pos end) {
  double m = 0.0;
  for (int b = 0; b < end.b; b++) m += mass_[size_t(b)];
  if (end.r > 0) {
    const Sorted& s = sorted(end.b);
    for (int r = 0; r < end.r; r++) m += double(s.w[size_t(r)]);
  }
  return m;
}

SampleOrder::Pos SampleOrder::before_weight_below(double threshold, Pos end) {
  // Candidates with z > log(threshold) + 1e-3 weigh more than the threshold (sample_weight is within
  // a few ulp of exp), so the search starts one bucket before that z.
  const float z_safe = float(std::log(threshold)) + 1e-3f;
  const int b0 = z_safe >= 0.f ? 0 : std::max(0, bucket_of(z_safe, 1.f, scale_, buckets_) - 1);
  for (int b = b0; b <= std::min(end.b, buckets_ - 1); b++) {
    if (count_[size_t(b)] == 0) continue;
    const Sorted& s = sorted(b);
    const int n = b == end.b ? end.r : int(s.idx.size());
    for (int r = 0; r < n; r++)
      if (double(s.w[size_t(r)]) < threshold) {
        // Never empty: the first candidate (weight 1) stays.
        if (r == 0 && mass(Pos{b, 0}) == 0.0) return Pos{b, 1};
        return Pos{b, r};
      }
  }
  return end;
}

SampleOrder::Pos SampleOrder::through_mass(double target, bool strict, Pos end) {
  auto reaches = [&](double m) { return strict ? m > target : m >= target; };
  double cum = 0.0;
  for (int b = 0; b <= std::min(end.b, buckets_ - 1); b++) {
    if (count_[size_t(b)] == 0) continue;
    const bool partial = b == end.b;
    if (!partial && !reaches(cum + mass_[size_t(b)])) {
      cum += mass_[size_t(b)];
      continue;
    }
    const Sorted& s = sorted(b);
    const int n = partial ? end.r : int(s.idx.size());
    for (int r = 0; r < n; r++) {
      cum += double(s.w[size_t(r)]);
      if (reaches(cum)) return Pos{b, r + 1};
    }
    // The bucket total reached the target but the running sum, rounded in another order, fell a
    // hair short: the bucket's last candidate is the one.
    return partial ? end : Pos{b, n};
  }
  return end;
}

int32_t SampleOrder::index_at(Pos end) {
  if (end.r > 0) return sorted(end.b).idx[size_t(end.r - 1)];
  for (int b = std::min(end.b, buckets_) - 1; b >= 0; b--)
    if (count_[size_t(b)] > 0) return sorted(b).idx.back();
  return 0;  // unreachable: the maximum always has weight 1
}

}  // namespace lp
