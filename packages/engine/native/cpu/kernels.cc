#include "kernels.h"

#include <cmath>
#include <cstring>

#include "simd.h"

namespace lp {

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) { mant <<= 1; exp--; }
      u = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000 | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Computes a tile of up to 4 weight rows x 3 inputs: 12 accumulators + 3 inputs + 1 weight = 16
// AVX2 registers. The weight rows are the stream we want to read once; the inputs stay in L1/L2.
static void tile(const WeightRef& W, int64_t r0, int nr, const float* const* xs, int nx, float* const* ys) {
  const int64_t K = W.cols;
  const void* rows[4];
  for (int r = 0; r < nr; r++) rows[r] = row_ptr(W, r0 + r);
  float acc_s[4][3] = {};
  int64_t k = 0;
#ifdef LP_AVX2
  if (nr == 4 && nx == 3) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
    __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
    for (; k + 8 <= K; k += 8) {
      __m256 x0 = _mm256_loadu_ps(xs[0] + k), x1 = _mm256_loadu_ps(xs[1] + k), x2 = _mm256_loadu_ps(xs[2] + k);
      __m256 w = load8(rows[0], W.dtype, k);
      a00 = _mm256_fmadd_ps(w, x0, a00); a01 = _mm256_fmadd_ps(w, x1, a01); a02 = _mm256_fmadd_ps(w, x2, a02);
      w = load8(rows[1], W.dtype, k);
      a10 = _mm256_fmadd_ps(w, x0, a10); a11 = _mm256_fmadd_ps(w, x1, a11); a12 = _mm256_fmadd_ps(w, x2, a12);
      w = load8(rows[2], W.dtype, k);
      a20 = _mm256_fmadd_ps(w, x0, a20); a21 = _mm256_fmadd_ps(w, x1, a21); a22 = _mm256_fmadd_ps(w, x2, a22);
      w = load8(rows[3], W.dtype, k);
      a30 = _mm256_fmadd_ps(w, x0, a30); a31 = _mm256_fmadd_ps(w, x1, a31); a32 = _mm256_fmadd_ps(w, x2, a32);
    }
    acc_s[0][0] = hsum(a00); acc_s[0][1] = hsum(a01); acc_s[0][2] = hsum(a02);
    acc_s[1][0] = hsum(a10); acc_s[1][1] = hsum(a11); acc_s[1][2] = hsum(a12);
    acc_s[2][0] = hsum(a20); acc_s[2][1] = hsum(a21); acc_s[2][2] = hsum(a22);
    acc_s[3][0] = hsum(a30); acc_s[3][1] = hsum(a31); acc_s[3][2] = hsum(a32);
  } else {
    __m256 acc[4][3];
    for (int r = 0; r < 4; r++)
      for (int j = 0; j < 3; j++) acc[r][j] = _mm256_setzero_ps();
    for (; k + 8 <= K; k += 8) {
      for (int r = 0; r < nr; r++) {
        __m256 w = load8(rows[r], W.dtype, k);
        for (int j = 0; j < nx; j++) acc[r][j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xs[j] + k), acc[r][j]);
      }
    }
    for (int r = 0; r < nr; r++)
      for (int j = 0; j < nx; j++) acc_s[r][j] = hsum(acc[r][j]);
  }
#endif
  for (; k < K; k++)
    for (int r = 0; r < nr; r++) {
      float w = load1(rows[r], W.dtype, k);
      for (int j = 0; j < nx; j++) acc_s[r][j] += w * xs[j][k];
    }
  for (int r = 0; r < nr; r++)
    for (int j = 0; j < nx; j++) ys[j][r0 + r] = acc_s[r][j];
}

// Row blocks are sized so a block of weights (about 128 KiB) stays in L2 while all inputs pass over
// it, with enough blocks to keep every thread busy.
static void matmul_impl(ThreadPool& pool, const float* x, const int32_t* rows, int64_t T, const WeightRef& W, float* y,
                        const RowEpilogue* epilogue) {
  const int64_t out = W.rows, K = W.cols;
  const int64_t es = W.dtype == DType::F32 ? 4 : 2;
  int64_t block = (128 * 1024) / (K * es);
  const int64_t fair = out / (4 * int64_t(pool.size()));
  if (block > fair) block = fair;
  block = block < 16 ? 16 : block > 64 ? 64 : block;
  block = (block / 4) * 4;
  const int64_t nblocks = (out + block - 1) / block;
  pool.parallel_for(nblocks, [&](int64_t b) {
    const int64_t r_begin = b * block, r_end = r_begin + block < out ? r_begin + block : out;
    for (int64_t t0 = 0; t0 < T; t0 += 3) {
      int nx = int(T - t0 < 3 ? T - t0 : 3);
      const float* xs[3];
      float* ys[3];
      for (int j = 0; j < nx; j++) {
        int64_t src = rows ? rows[t0 + j] : t0 + j;
        xs[j] = x + src * K;
        ys[j] = y + (t0 + j) * out;
      }
      for (int64_t r = r_begin; r < r_end; r += 4) tile(W, r, int(r_end - r < 4 ? r_end - r : 4), xs, nx, ys);
    }
    if (epilogue) (*epilogue)(r_begin, r_end);
  }, T * out * K);
}

void matmul(ThreadPool& pool, const float* x, int64_t T, const WeightRef& W, float* y, const RowEpilogue* epilogue) {
  matmul_impl(pool, x, nullptr, T, W, y, epilogue);
}

void matmul_rows(ThreadPool& pool, const float* x, const int32_t* rows, int64_t n_rows, const WeightRef& W, float* y) {
  matmul_impl(pool, x, rows, n_rows, W, y, nullptr);
}

float dot_f32(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.f;
#ifdef LP_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  s = hsum(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
  int64_t i = 0;
#ifdef LP_AVX2
  __m256 va = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; i++) y[i] += a * x[i];
}

void load_vector(const WeightRef& v, float* dst) {
  const int64_t n = v.rows * v.cols;
  for (int64_t i = 0; i < n; i++) dst[i] = load1(v.data, v.dtype, i);
}

void embed_row(const WeightRef& table, int64_t id, float* dst) {
  const void* row = row_ptr(table, id);
  for (int64_t i = 0; i < table.cols; i++) dst[i] = load1(row, table.dtype, i);
}

void rmsnorm(ThreadPool& pool, const float* x, const WeightRef& w, float* out, int64_t T, int64_t n, float eps) {
  pool.parallel_chunks(T, [&](int, int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      const float* xr = x + t * n;
      float* o = out + t * n;
      // HF computes the mean of squares in float32 then multiplies by rsqrt; we do the same.
      float ss = dot_f32(xr, xr, n) / float(n);
      float inv = 1.0f / std::sqrt(ss + eps);
      for (int64_t i = 0; i < n; i++) o[i] = load1(w.data, w.dtype, i) * (xr[i] * inv);
    }
  }, T * n);
}

void silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace lp
