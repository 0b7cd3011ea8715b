// The matmul micro-kernel: a tile of NR weight rows x NX input rows, accumulated in SIMD lanes
// over k, then reduced. Every (row, input) pair is reduced in the same order whatever the tile
// shape, so a token's result never depends on which other tokens share the batch.
// AVX-512: 3 rows x 8 inputs = 24 accumulators + 3 weight vectors + 1 input of 32 registers, so a
// decode batch of 8 reads (and widens) each weight once. AVX2: 3 x 4 in 16 registers.
#pragma once
#include <cmath>
#include <cstdint>
#include <utility>

#include "simd.h"

// GCC 12 reports its own AVX-512 reduction intrinsics as reading an uninitialised value.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace lp {

#if defined(LP_AVX512)
constexpr int kTileRows = 3, kTileTokens = 8;
#elif defined(LP_AVX2)
constexpr int kTileRows = 3, kTileTokens = 4;
#else
constexpr int kTileRows = 3, kTileTokens = 4;
#endif

using TileFn = void (*)(const void* const* rows, int64_t K, const float* const* xs, float* const* ys, int64_t r0);

namespace tile_detail {

template <DType DT>
inline float load_scalar(const void* row, int64_t k) { return load1(row, DT, k); }

#if defined(LP_AVX512)
template <DType DT>
inline __m512 loadv(const void* row, int64_t k) {
  if constexpr (DT == DType::F32) return _mm512_loadu_ps(static_cast<const float*>(row) + k);
  else if constexpr (DT == DType::BF16) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(row) + k)));
  }
}
// The k % 16 tail as a masked load, so that every k goes through the same lanes and the same fused
// multiply-add whatever the tile shape (a scalar tail lets the compiler contract differently per
// template instance, which would break batch invariance).
template <DType DT>
inline __m512 loadv_tail(const void* row, int64_t k, __mmask16 m) {
  if constexpr (DT == DType::F32) return _mm512_maskz_loadu_ps(m, static_cast<const float*>(row) + k);
  else if constexpr (DT == DType::BF16) {
    __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(row) + k);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(row) + k));
  }
}
constexpr int kLanes = 16;
using Vec = __m512;
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float vsum(Vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(LP_AVX2)
template <DType DT>
inline __m256 loadv(const void* row, int64_t k) { return load8(row, DT, k); }
constexpr int kLanes = 8;
using Vec = __m256;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float vsum(Vec v) { return hsum(v); }
#endif

template <DType DT, int NR, int NX>
void tile(const void* const* rows, int64_t K, const float* const* xs, float* const* ys, int64_t r0) {
  float acc_s[NR][NX];
  int64_t k = 0;
#if defined(LP_AVX512) || defined(LP_AVX2)
  Vec acc[NR][NX];
  for (int r = 0; r < NR; r++)
    for (int j = 0; j < NX; j++) acc[r][j] = vzero();
  for (; k + kLanes <= K; k += kLanes) {
    Vec w[NR];
    for (int r = 0; r < NR; r++) w[r] = loadv<DT>(rows[r], k);
    for (int j = 0; j < NX; j++) {
      const Vec xv = vload(xs[j] + k);
      for (int r = 0; r < NR; r++) acc[r][j] = vfma(w[r], xv, acc[r][j]);
    }
  }
#if defined(LP_AVX512)
  if (k < K) {
    const __mmask16 m = __mmask16((1u << (K - k)) - 1);
    Vec w[NR];
    for (int r = 0; r < NR; r++) w[r] = loadv_tail<DT>(rows[r], k, m);
    for (int j = 0; j < NX; j++) {
      const Vec xv = _mm512_maskz_loadu_ps(m, xs[j] + k);
      for (int r = 0; r < NR; r++) acc[r][j] = vfma(w[r], xv, acc[r][j]);
    }
    k = K;
  }
#endif
  for (int r = 0; r < NR; r++)
    for (int j = 0; j < NX; j++) acc_s[r][j] = vsum(acc[r][j]);
#else
  for (int r = 0; r < NR; r++)
    for (int j = 0; j < NX; j++) acc_s[r][j] = 0.f;
#endif
  for (; k < K; k++)
    for (int r = 0; r < NR; r++) {
      const float w = load_scalar<DT>(rows[r], k);
      for (int j = 0; j < NX; j++) acc_s[r][j] = std::fma(w, xs[j][k], acc_s[r][j]);
    }
  for (int r = 0; r < NR; r++)
    for (int j = 0; j < NX; j++) ys[j][r0 + r] = acc_s[r][j];
}

template <DType DT, int NR, int... NX>
constexpr TileFn pick_nx(int nx, std::integer_sequence<int, NX...>) {
  TileFn fns[] = {&tile<DT, NR, NX + 1>...};
  return fns[nx - 1];
}

template <DType DT>
TileFn pick(int nr, int nx) {
  auto seq = std::make_integer_sequence<int, kTileTokens>{};
  switch (nr) {
    case 1: return pick_nx<DT, 1>(nx, seq);
    case 2: return pick_nx<DT, 2>(nx, seq);
    default: return pick_nx<DT, 3>(nx, seq);
  }
}

}  // namespace tile_detail

// The tile kernel for nr (1..kTileRows) weight rows of dtype dt and nx (1..kTileTokens) inputs.
inline TileFn tile_fn(DType dt, int nr, int nx) {
  switch (dt) {
    case DType::F32: return tile_detail::pick<DType::F32>(nr, nx);
    case DType::BF16: return tile_detail::pick<DType::BF16>(nr, nx);
    default: return tile_detail::pick<DType::F16>(nr, nx);
  }
}

#if defined(LP_AVX512) && defined(__AVX512BF16__)
#define LP_AVX512BF16 1
// bfloat16 weights times bfloat16 inputs with float32 accumulation (vdpbf16ps: 32 products per
// instruction, twice the widening kernel's rate). Used for every matmul of a bfloat16 model, so the
// rounding of inputs to bfloat16 is the same whatever the batch (as in transformers' bf16 path).
using TileBf16Fn = void (*)(const void* const* rows, int64_t K, const uint16_t* const* xs, float* const* ys, int64_t r0);

namespace tile_detail {
template <int NR, int NX>
void tile_bf16(const void* const* rows, int64_t K, const uint16_t* const* xs, float* const* ys, int64_t r0) {
  __m512 acc[NR][NX];
  for (int r = 0; r < NR; r++)
    for (int j = 0; j < NX; j++) acc[r][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512bh w[NR];
    for (int r = 0; r < NR; r++) w[r] = (__m512bh)_mm512_loadu_si512(static_cast<const uint16_t*>(rows[r]) + k);
    for (int j = 0; j < NX; j++) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xs[j] + k);
      for (int r = 0; r < NR; r++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], w[r], xv);
    }
  }
  if (k < K) {
    const __mmask32 m = __mmask32((uint64_t(1) << (K - k)) - 1);
    __m512bh w[NR];
    for (int r = 0; r < NR; r++) w[r] = (__m512bh)_mm512_maskz_loadu_epi16(m, static_cast<const uint16_t*>(rows[r]) + k);
    for (int j = 0; j < NX; j++) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, xs[j] + k);
      for (int r = 0; r < NR; r++) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], w[r], xv);
    }
  }
  for (int r = 0; r < NR; r++)
    for (int j = 0; j < NX; j++) ys[j][r0 + r] = _mm512_reduce_add_ps(acc[r][j]);
}

template <int NR, int... NX>
constexpr TileBf16Fn pick_bf16_nx(int nx, std::integer_sequence<int, NX...>) {
  TileBf16Fn fns[] = {&tile_bf16<NR, NX + 1>...};
  return fns[nx - 1];
}
}  // namespace tile_detail

inline TileBf16Fn tile_bf16_fn(int nr, int nx) {
  auto seq = std::make_integer_sequence<int, kTileTokens>{};
  switch (nr) {
    case 1: return tile_detail::pick_bf16_nx<1>(nx, seq);
    case 2: return tile_detail::pick_bf16_nx<2>(nx, seq);
    default: return tile_detail::pick_bf16_nx<3>(nx, seq);
  }
}

// float32 -> bfloat16 (round to nearest even) for n values.
inline void to_bf16(const float* src, uint16_t* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    _mm512_storeu_si512(dst + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i)));
  for (; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}
#endif

}  // namespace lp
