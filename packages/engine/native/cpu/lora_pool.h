// LoRA weights of all resident adapters live in one preallocated pool of "pages". A page holds one
// rank-row of an adapter for every layer and module: the A row (length in_m) and the B column
// (length out_m, stored contiguously). An adapter of rank r takes exactly r pages, so a rank-4
// adapter uses a quarter of the memory of a rank-16 one and nothing is padded to the pool's max
// rank (the S-LoRA unified-paging idea, applied to adapter weights). Pages are float32, or
// bfloat16 for half-precision models (half the bytes each decode step reads). Which slot and pages
// an adapter gets is decided by the binding's allocator (../core/lora_slots.h); this is the memory.
//
// Per step: shrink v = scale * A x for every token (one pass per group of modules sharing an
// input), then expand y += B v fused into the base matmul's output-row blocks (expand_rows).
#pragma once
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "../core/backend.h"
#include "thread_pool.h"

namespace lp {

struct LoraSlot {
  bool bound = false;
  std::vector<int> pages;                   // [max_rank] page index of rank-row j
  std::vector<int> rank;                    // [layers * kNumModules]
  std::vector<float> scale;                 // [layers * kNumModules]
  std::vector<std::vector<float>> dora;     // [layers * kNumModules] -> DoRA row scale g [out], or empty
};

class LoraPool {
 public:
  explicit LoraPool(const ModelSpec& spec);
  void write(int slot, const std::vector<int>& pages, const AdapterSpec& a);
  void clear(int slot);
  size_t bytes() const { return data_.size(); }  // the preallocated pool (DoRA scales: dora_bytes())
  size_t dora_bytes() const { return dora_bytes_; }
  size_t page_bytes() const { return page_elems_ * es_; }

  // Groups the step's tokens into runs of <= kTileTokens consecutive tokens with one adapter slot.
  void begin_step(const int32_t* token_slot, int64_t T);
  // True when some token of this step adapts (layer, m).
  bool active(int layer, int m) const;
  // v_m[t, :rank] = scale * A_m x[t] for each module m in mods (all reading the same input x [T, in]).
  void shrink(ThreadPool& pool, int layer, std::initializer_list<int> mods, const float* x, int64_t T);
  // y[t, r0:r1] += B_m[r0:r1, :] v_m[t] for every adapted token t; y is [T, out_m]. For a DoRA
  // module the row then becomes g * (base + delta), so y must hold the base output without bias.
  void expand_rows(int layer, int m, float* y, int64_t r0, int64_t r1) const;

 private:
  struct Run { int64_t t0, t1; int slot; };
  const uint8_t* a_row(int page, int layer, int m) const {
    return data_.data() + (size_t(page) * page_elems_ + layer_off_[size_t(layer)] + mod_off_[m]) * es_;
  }
  const uint8_t* b_col(int page, int layer, int m) const { return a_row(page, layer, m) + size_t(in_[m]) * es_; }
  int rank_of(int slot, int layer, int m) const { return slots_[size_t(slot)].rank[size_t(layer * kNumModules + m)]; }

  int layers_, max_rank_;
  DType dtype_;
  size_t es_;
  int in_[kNumModules], out_[kNumModules];
  size_t mod_off_[kNumModules];
  std::vector<size_t> layer_off_;
  size_t page_elems_;
  std::vector<uint8_t> data_;               // [pages, page_elems] of dtype_
  std::vector<LoraSlot> slots_;
  std::atomic<size_t> dora_bytes_{0};       // DoRA scales held by the bound slots (read by bytes_allocated)
  std::vector<Run> runs_;                   // this step's adapted runs
  std::vector<float> v_[kNumModules];       // [T, max_rank] shrink results of this layer
};

}  // namespace lp
