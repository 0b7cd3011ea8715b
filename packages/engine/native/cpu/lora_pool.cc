#include "lora_pool.h"

#include <algorithm>

#include "kernels.h"

namespace lp {

LoraPool::LoraPool(const ModelSpec& spec) : layers_(spec.layers), slots_(spec.max_adapters) {
  size_t per_layer = 0;
  for (int m = 0; m < kNumModules; m++) {
    in_[m] = module_in(spec, m);
    out_[m] = module_out(spec, m);
    mod_off_[m] = per_layer;
    per_layer += size_t(in_[m]) + size_t(out_[m]);
  }
  layer_off_.resize(spec.layers);
  for (int l = 0; l < spec.layers; l++) layer_off_[l] = size_t(l) * per_layer;
  page_floats_ = per_layer * size_t(spec.layers);
  data_.assign(size_t(spec.lora_pages) * page_floats_, 0.f);
}

void LoraPool::write(int slot, const std::vector<int>& pages, const AdapterSpec& a) {
  LoraSlot s;
  s.pages = pages;
  s.rank = a.rank;
  s.scale = a.scale;
  for (int l = 0; l < layers_; l++)
    for (int m = 0; m < kNumModules; m++) {
      const int idx = l * kNumModules + m, r = a.rank[idx];
      const std::vector<float>& A = a.a[idx];  // [r, in]
      const std::vector<float>& B = a.b[idx];  // [out, r]
      for (int j = 0; j < r; j++) {
        float* dst = a_row_mut(pages[j], l, m);
        std::copy(A.begin() + size_t(j) * in_[m], A.begin() + size_t(j + 1) * in_[m], dst);
        float* bdst = dst + in_[m];
        for (int o = 0; o < out_[m]; o++) bdst[o] = B[size_t(o) * r + j];  // column j of B
      }
    }
  s.bound = true;
  slots_[slot] = std::move(s);
}

void LoraPool::apply(ThreadPool& pool, int layer, int m, const float* x, float* y, int64_t T, const int32_t* token_slot) const {
  // Work items: runs of consecutive tokens sharing one adapted slot, cut into groups of <= 4 tokens
  // so that the A and B rows a group reads stay hot while the group's tokens use them.
  struct Item { int64_t t0, t1; int slot; };
  std::vector<Item> items;
  for (int64_t t = 0; t < T;) {
    int s = token_slot[t];
    int64_t e = t + 1;
    while (e < T && token_slot[e] == s && e - t < 4) e++;
    if (s >= 0 && slots_[s].bound && slots_[s].rank[layer * kNumModules + m] > 0) items.push_back({t, e, s});
    t = e;
  }
  if (items.empty()) return;
  const int in = in_[m], out = out_[m];
  pool.parallel_for(int64_t(items.size()), [&](int64_t i) {
    const Item& it = items[size_t(i)];
    const LoraSlot& s = slots_[it.slot];
    const int r = s.rank[layer * kNumModules + m];
    const float scale = s.scale[layer * kNumModules + m];
    float v[4][1024];  // shrink result per token; rank <= 1024 is enforced when the engine is created
    for (int64_t t = it.t0; t < it.t1; t++)
      for (int j = 0; j < r; j++) v[t - it.t0][j] = dot_f32(x + t * in, a_row(s.pages[j], layer, m), in) * scale;
    for (int j = 0; j < r; j++) {
      const float* bc = b_col(s.pages[j], layer, m);
      for (int64_t t = it.t0; t < it.t1; t++) axpy_f32(v[t - it.t0][j], bc, y + t * out, out);
    }
  }, int64_t(items.size()) * 4 * 16 * (in + out));
}

}  // namespace lp
