// LoRA weights of all resident adapters live in one preallocated pool of "pages". A page holds one
// rank-row of an adapter for every layer and module: the A row (length in_m) and the B column
// (length out_m, stored contiguously). An adapter of rank r takes exactly r pages, so a rank-4
// adapter uses a quarter of the memory of a rank-16 one and nothing is padded to the pool's max
// rank (the S-LoRA unified-paging idea, applied to adapter weights).
#pragma once
#include <cstdint>
#include <vector>

#include "../core/backend.h"
#include "thread_pool.h"

namespace lp {

struct LoraSlot {
  bool bound = false;
  std::vector<int> pages;                   // [max_rank] page index of rank-row j
  std::vector<int> rank;                    // [layers * kNumModules]
  std::vector<float> scale;                 // [layers * kNumModules]
};

class LoraPool {
 public:
  explicit LoraPool(const ModelSpec& spec);
  void write(int slot, const std::vector<int>& pages, const AdapterSpec& a);
  void clear(int slot) { slots_[slot] = LoraSlot{}; }
  const LoraSlot& slot(int s) const { return slots_[s]; }
  size_t bytes() const { return data_.size() * sizeof(float); }

  // y[t] += scale * B (A x[t]) for every token t whose slot adapts (layer, module m).
  // token_slot: [T] slot per token (-1 none); runs of equal slots are processed together.
  void apply(ThreadPool& pool, int layer, int m, const float* x, float* y, int64_t T, const int32_t* token_slot) const;

 private:
  const float* a_row(int page, int layer, int m) const { return data_.data() + size_t(page) * page_floats_ + layer_off_[layer] + mod_off_[m]; }
  const float* b_col(int page, int layer, int m) const { return a_row(page, layer, m) + in_[m]; }
  float* a_row_mut(int page, int layer, int m) { return const_cast<float*>(a_row(page, layer, m)); }

  int layers_;
  int in_[kNumModules], out_[kNumModules];
  size_t mod_off_[kNumModules];
  std::vector<size_t> layer_off_;
  size_t page_floats_;
  std::vector<float> data_;                 // [pages, page_floats]
  std::vector<LoraSlot> slots_;
};

}  // namespace lp
