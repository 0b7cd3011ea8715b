// CPU compute kernels. All activations are float32; weights may be float32, float16 or bfloat16
// and are widened to float32 in registers (the weights stay in their file's dtype in memory).
#pragma once
#include <cstdint>
#include <functional>

#include "../core/backend.h"
#include "thread_pool.h"

namespace lp {

// Called once per block of output rows [r_begin, r_end) after y[:, r_begin:r_end] is computed,
// on the thread that computed it: the place for bias and LoRA expand, while the rows are hot.
using RowEpilogue = std::function<void(int64_t r_begin, int64_t r_end)>;

// True when bfloat16 weights multiply bfloat16-rounded inputs (AVX512-BF16) rather than widened
// float32 ones; tests compare against the matching reference.
bool bf16_dot_products();

// y[T, out] = x[T, in] @ W[out, in]^T. Parallel over blocks of output rows.
void matmul(ThreadPool& pool, const float* x, int64_t T, const WeightRef& W, float* y, const RowEpilogue* epilogue = nullptr);

// Same as matmul but for a subset of x rows (rows[i] indexes x); y is [n_rows, out].
void matmul_rows(ThreadPool& pool, const float* x, const int32_t* rows, int64_t n_rows, const WeightRef& W, float* y);

// out[t] = x[t] / rms(x[t]) * w, x and out [T, n].
void rmsnorm(ThreadPool& pool, const float* x, const WeightRef& w, float* out, int64_t T, int64_t n, float eps);

// Copies row `id` of an embedding table into dst (widening to float32).
void embed_row(const WeightRef& table, int64_t id, float* dst);

// Widens n values of a weight vector to float32.
void load_vector(const WeightRef& v, float* dst);

// x[i] = silu(gate[i]) * up[i] for n values.
void silu_mul(float* gate, const float* up, int64_t n);

float dot_f32(const float* a, const float* b, int64_t n);
void axpy_f32(float a, const float* x, float* y, int64_t n);  // y += a * x


}  // namespace lp
