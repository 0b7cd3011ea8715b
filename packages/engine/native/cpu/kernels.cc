#include "kernels.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "matmul_tile.h"
#include "simd.h"

namespace lp {

bool bf16_dot_products() {
#ifdef LP_AVX512BF16
  return true;
#else
  return false;
#endif
}

// Runs every output-row block of W in parallel: for each group of up to kTileTokens inputs
// (input_row(t) gives input t as XT*), tiles of kTileRows weight rows through pick_tile(nr, nx),
// then the epilogue of the block.
template <typename XT, typename InputRow, typename PickTile>
static void run_blocks(ThreadPool& pool, int64_t block, int64_t T, const WeightRef& W, float* y, const RowEpilogue* epilogue,
                       InputRow input_row, PickTile pick_tile) {
  const int64_t out = W.rows, K = W.cols;
  const int64_t nblocks = (out + block - 1) / block;
  pool.parallel_for(nblocks, [&](int64_t b) {
    const int64_t r_begin = b * block, r_end = r_begin + block < out ? r_begin + block : out;
    for (int64_t t0 = 0; t0 < T; t0 += kTileTokens) {
      const int nx = int(T - t0 < kTileTokens ? T - t0 : kTileTokens);
      const XT* xs[kTileTokens];
      float* ys[kTileTokens];
      for (int j = 0; j < nx; j++) {
        xs[j] = input_row(t0 + j);
        ys[j] = y + (t0 + j) * out;
      }
      for (int64_t r = r_begin; r < r_end; r += kTileRows) {
        const int nr = int(r_end - r < kTileRows ? r_end - r : kTileRows);
        const void* wr[kTileRows];
        for (int i = 0; i < nr; i++) wr[i] = row_ptr(W, r + i);
        pick_tile(nr, nx)(wr, K, xs, ys, r);
      }
    }
    if (epilogue) (*epilogue)(r_begin, r_end);
  }, T * out * K);
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
  block = (block / kTileRows) * kTileRows;
#ifdef LP_AVX512BF16
  if (W.dtype == DType::BF16) {
    // Inputs rounded to bfloat16 once per call: xb [T, K].
    thread_local std::vector<uint16_t> xb;
    xb.resize(size_t(T * K));
    for (int64_t t = 0; t < T; t++) to_bf16(x + (rows ? rows[t] : t) * K, xb.data() + t * K, K);
    const uint16_t* xbp = xb.data();  // the pool's threads must see this thread's buffer, not their own
    run_blocks<uint16_t>(pool, block, T, W, y, epilogue, [&](int64_t t) { return xbp + t * K; }, tile_bf16_fn);
    return;
  }
#endif
  run_blocks<float>(pool, block, T, W, y, epilogue, [&](int64_t t) { return x + (rows ? rows[t] : t) * K; },
                    [&](int nr, int nx) { return tile_fn(W.dtype, nr, nx); });
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
