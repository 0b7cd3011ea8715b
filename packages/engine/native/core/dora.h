// DoRA as peft computes it: y = g * (W x + s B (A x)) + bias with g = m / ||W + s B A||_2 per output
// row. The norm depends only on the adapter and the base weights, so it is computed once, when the
// adapter is loaded (on the loading thread), and the backends apply one scale per output row.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"
#include "dtype.h"

namespace lp {

// Row `o` of a base weight as float32.
inline void weight_row_f32(const WeightRef& w, int64_t o, float* dst) {
  const int64_t n = w.cols;
  if (w.dtype == DType::F32) {
    std::memcpy(dst, static_cast<const float*>(w.data) + o * n, size_t(n) * 4);
    return;
  }
  const uint16_t* src = static_cast<const uint16_t*>(w.data) + o * n;
  for (int64_t i = 0; i < n; i++) dst[i] = half_bits_to_f32(src[i], w.dtype == DType::BF16);
}

// Fills a.dora_scale from a.magnitude (a, b widened to float32 already). Throws EngineFailure when
// the base weights are not on the host or a row norm is zero.
inline void compute_dora_scales(const ModelSpec& s, AdapterSpec& a) {
  const size_t n = size_t(s.layers) * kNumModules;
  a.dora_scale.assign(n, {});
  if (a.magnitude.empty()) return;
  std::vector<float> row;
  for (size_t idx = 0; idx < n && idx < a.magnitude.size(); idx++) {
    const std::vector<float>& mag = a.magnitude[idx];
    if (mag.empty()) continue;
    const int l = int(idx / kNumModules), m = int(idx % kNumModules), r = a.rank[idx];
    const WeightRef& W = s.layer[size_t(l)].proj[m];
    if (!W.data || s.random_weights) throw EngineFailure("ADAPTER_UNSUPPORTED", "DoRA needs the base weights on the host");
    const int64_t out = W.rows, in = W.cols;
    const float* A = a.a[idx].data();  // [r, in]
    const float* B = a.b[idx].data();  // [out, r]
    const float sc = a.scale[idx];
    row.resize(size_t(in));
    std::vector<float>& g = a.dora_scale[idx];
    g.resize(size_t(out));
    for (int64_t o = 0; o < out; o++) {
      weight_row_f32(W, o, row.data());
      double sum = 0;
      for (int64_t i = 0; i < in; i++) {
        float delta = 0.f;
        for (int j = 0; j < r; j++) delta += B[o * r + j] * A[int64_t(j) * in + i];
        const double w = double(row[size_t(i)]) + double(sc) * double(delta);
        sum += w * w;
      }
      const double norm = std::sqrt(sum);
      if (!(norm > 0)) throw EngineFailure("ADAPTER_SHAPE", "DoRA: a row of W + s B A has norm 0 (layer " + std::to_string(l) + ")");
      g[size_t(o)] = float(double(mag[size_t(o)]) / norm);
    }
  }
}

}  // namespace lp
