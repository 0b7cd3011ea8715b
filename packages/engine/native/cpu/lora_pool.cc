#include "lora_pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../core/lora_runs.h"
#include "matmul_tile.h"
#include "simd.h"

namespace lp {

LoraPool::LoraPool(const ModelSpec& spec)
    : layers_(spec.layers), max_rank_(spec.max_rank), dtype_(spec.lora_dtype), es_(spec.lora_dtype == DType::F32 ? 4 : 2),
      slots_(size_t(spec.max_adapters)) {
  size_t per_layer = 0;
  for (int m = 0; m < kNumModules; m++) {
    in_[m] = module_in(spec, m);
    out_[m] = module_out(spec, m);
    mod_off_[m] = per_layer;
    per_layer += size_t(in_[m]) + size_t(out_[m]);
  }
  layer_off_.resize(size_t(spec.layers));
  for (int l = 0; l < spec.layers; l++) layer_off_[size_t(l)] = size_t(l) * per_layer;
  page_elems_ = per_layer * size_t(spec.layers);
  data_.assign(size_t(spec.lora_pages) * page_elems_ * es_, 0);
}

void LoraPool::write(int slot, const std::vector<int>& pages, const AdapterSpec& a) {
  auto store = [&](uint8_t* dst, size_t i, float v) {
    if (dtype_ == DType::F32) std::memcpy(dst + i * 4, &v, 4);
    else {
      uint16_t h = f32_to_bf16(v);
      std::memcpy(dst + i * 2, &h, 2);
    }
  };
  for (int l = 0; l < layers_; l++)
    for (int m = 0; m < kNumModules; m++) {
      const size_t idx = size_t(l * kNumModules + m);
      const int r = a.rank[idx];
      const std::vector<float>& A = a.a[idx];  // [r, in]
      const std::vector<float>& B = a.b[idx];  // [out, r]
      for (int j = 0; j < r; j++) {
        uint8_t* arow = const_cast<uint8_t*>(a_row(pages[size_t(j)], l, m));
        for (int i = 0; i < in_[m]; i++) store(arow, size_t(i), A[size_t(j) * size_t(in_[m]) + size_t(i)]);
        uint8_t* bcol = arow + size_t(in_[m]) * es_;
        for (int o = 0; o < out_[m]; o++) store(bcol, size_t(o), B[size_t(o) * size_t(r) + size_t(j)]);  // column j of B
      }
    }
  LoraSlot s;
  s.pages = pages;
  s.rank = a.rank;
  s.scale = a.scale;
  s.dora = a.dora_scale;
  s.dora.resize(size_t(layers_) * kNumModules);
  for (const auto& g : s.dora) dora_bytes_ += g.size() * sizeof(float);
  s.bound = true;
  slots_[size_t(slot)] = std::move(s);
}

void LoraPool::clear(int slot) {
  for (const auto& g : slots_[size_t(slot)].dora) dora_bytes_ -= g.size() * sizeof(float);
  slots_[size_t(slot)] = LoraSlot{};
}

void LoraPool::begin_step(const int32_t* token_slot, int64_t T) {
  runs_.clear();
  for_each_lora_run(token_slot, T, kTileTokens, [&](int64_t t0, int64_t t1, int slot) {
    if (slots_[size_t(slot)].bound) runs_.push_back({t0, t1, slot});
  });
  for (auto& v : v_) v.assign(size_t(T) * size_t(max_rank_), 0.f);
}

bool LoraPool::active(int layer, int m) const {
  for (const Run& r : runs_)
    if (rank_of(r.slot, layer, m) > 0) return true;
  return false;
}

void LoraPool::shrink(ThreadPool& pool, int layer, std::initializer_list<int> mods, const float* x, int64_t T) {
  std::vector<int> ms;
  for (int m : mods)
    if (active(layer, m)) ms.push_back(m);
  if (ms.empty()) return;
  const int64_t n = int64_t(runs_.size() * ms.size());
  pool.parallel_for(n, [&](int64_t w) {
    const Run& run = runs_[size_t(w) / ms.size()];
    const int m = ms[size_t(w) % ms.size()];
    const LoraSlot& s = slots_[size_t(run.slot)];
    const int r = rank_of(run.slot, layer, m);
    const float scale = s.scale[size_t(layer * kNumModules + m)];
    // The matmul tile with the adapter's A rows (one per page) as weight rows: v[t, j] = A_j . x[t].
    const int nx = int(run.t1 - run.t0);
    const float* xs[kTileTokens];
    float* vs[kTileTokens];
    for (int i = 0; i < nx; i++) {
      xs[i] = x + (run.t0 + i) * in_[m];
      vs[i] = v_[m].data() + size_t(run.t0 + i) * size_t(max_rank_);
    }
    for (int j = 0; j < r; j += kTileRows) {
      const int nr = r - j < kTileRows ? r - j : kTileRows;
      const void* rows[kTileRows];
      for (int i = 0; i < nr; i++) rows[i] = a_row(s.pages[size_t(j + i)], layer, m);
      tile_fn(dtype_, nr, nx)(rows, in_[m], xs, vs, j);
    }
    for (int i = 0; i < nx; i++)
      for (int j = 0; j < r; j++) vs[i][j] *= scale;
  }, n * kTileTokens * 16 * in_[ms[0]]);
}

void LoraPool::expand_rows(int layer, int m, float* y, int64_t r0, int64_t r1) const {
  const int64_t out = out_[m];
  for (const Run& run : runs_) {
    const int r = rank_of(run.slot, layer, m);
    if (r == 0) continue;
    const LoraSlot& s = slots_[size_t(run.slot)];
    const uint8_t* cols[1024];
    for (int j = 0; j < r; j++) cols[j] = b_col(s.pages[size_t(j)], layer, m);
    for (int64_t t = run.t0; t < run.t1; t++) {
      const float* v = v_[m].data() + size_t(t) * size_t(max_rank_);
      float* yr = y + t * out;
      // Rank-rows in groups of 16 so their broadcast coefficients stay in registers while the
      // output chunks stream past.
      for (int j0 = 0; j0 < r; j0 += 16) {
        const int nj = r - j0 < 16 ? r - j0 : 16;
        int64_t o = r0;
#if defined(LP_AVX512)
        __m512 vb[16];
        for (int j = 0; j < nj; j++) vb[j] = _mm512_set1_ps(v[j0 + j]);
        for (; o < r1; o += 16) {
          const __mmask16 mask = r1 - o >= 16 ? __mmask16(0xffff) : __mmask16((1u << (r1 - o)) - 1);
          __m512 acc = _mm512_maskz_loadu_ps(mask, yr + o);
          if (dtype_ == DType::F32)
            for (int j = 0; j < nj; j++) acc = _mm512_fmadd_ps(vb[j], _mm512_maskz_loadu_ps(mask, reinterpret_cast<const float*>(cols[j0 + j]) + o), acc);
          else
            for (int j = 0; j < nj; j++) {
              __m256i h = _mm256_maskz_loadu_epi16(mask, reinterpret_cast<const uint16_t*>(cols[j0 + j]) + o);
              acc = _mm512_fmadd_ps(vb[j], _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)), acc);
            }
          _mm512_mask_storeu_ps(yr + o, mask, acc);
        }
#elif defined(LP_AVX2)
        for (; o + 8 <= r1; o += 8) {
          __m256 acc = _mm256_loadu_ps(yr + o);
          for (int j = 0; j < nj; j++) acc = _mm256_fmadd_ps(_mm256_set1_ps(v[j0 + j]), load8(cols[j0 + j], dtype_, o), acc);
          _mm256_storeu_ps(yr + o, acc);
        }
#endif
        for (; o < r1; o++) {
          float acc = yr[o];
          for (int j = 0; j < nj; j++) acc = std::fma(v[j0 + j], load1(cols[j0 + j], dtype_, o), acc);
          yr[o] = acc;
        }
      }
    }
    const std::vector<float>& g = s.dora[size_t(layer * kNumModules + m)];
    if (!g.empty())  // DoRA: the whole row (base + delta) takes the magnitude's scale
      for (int64_t t = run.t0; t < run.t1; t++) {
        float* yr = y + t * out;
        for (int64_t o = r0; o < r1; o++) yr[o] *= g[size_t(o)];
      }
  }
}

}  // namespace lp
