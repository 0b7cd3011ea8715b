// Inline SIMD helpers shared by the CPU kernels: widening loads of float32 / float16 / bfloat16
// rows to float32 lanes, and horizontal sums.
#pragma once
#include <cstdint>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LP_AVX2 1
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define LP_AVX512 1
#endif

#include "../core/backend.h"
#include "../core/dtype.h"

namespace lp {

#ifdef LP_AVX2
// Loads 8 weights starting at element k of a row, widened to float32.
inline __m256 load8(const void* row, DType dt, int64_t k) {
  switch (dt) {
    case DType::F32: return _mm256_loadu_ps(static_cast<const float*>(row) + k);
    case DType::BF16: {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + k));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    default: {
      __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(row) + k));
      return _mm256_cvtph_ps(h);
    }
  }
}
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}
#endif

inline float load1(const void* row, DType dt, int64_t k) {
  switch (dt) {
    case DType::F32: return static_cast<const float*>(row)[k];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(row)[k]);
    default: return f16_to_f32(static_cast<const uint16_t*>(row)[k]);
  }
}

inline const void* row_ptr(const WeightRef& W, int64_t r) {
  size_t es = W.dtype == DType::F32 ? 4 : 2;
  return static_cast<const char*>(W.data) + size_t(r) * size_t(W.cols) * es;
}


}  // namespace lp
