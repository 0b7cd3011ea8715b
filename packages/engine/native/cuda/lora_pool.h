// The LoRA pool in device memory, organised exactly like cpu/lora_pool.h: `lora_pages` rank-row
// pages, an adapter of rank r occupying r of them (no padding to the pool's max rank).
//   pool:  [pages][layers][modules]{A row [in_pad], B col [out_pad]}  T (in/out padded to 8)
//   rank:  [max_adapters][layers][7] int, scale: same shape float, pages: [max_adapters][max_rank]
//
// write() runs on the adapter-loading thread, concurrently with step() on another thread: it
// converts one page at a time into a double-buffered pinned staging area and copies it with
// cudaMemcpyAsync on its own non-blocking stream, so the DMA overlaps both the conversion of the
// next page and the kernels of running steps. Safety comes from the allocator's bookkeeping
// (../core/lora_slots.h): the pages and slot being written are referenced by no running step (the
// slot is not bound yet and the pages are free), and write() returns only after its stream has
// finished, before the slot is marked bound.
#pragma once
#include <mutex>
#include <vector>

#include "memory.h"

namespace lp {
namespace cu {

class DeviceLora {
 public:
  DeviceLora(const ModelSpec& s, Ty ty);
  ~DeviceLora();
  const LoraLayout& layout() const { return lay_; }
  void write(int slot, const std::vector<int>& pages, const AdapterSpec& a);
  void clear(int slot);
  int slot_rank(int slot) const;   // pages the slot's adapter occupies (0 when empty)
  bool slot_dora(int slot) const;  // the slot's adapter has DoRA modules (steps with it take the unfused path)
  size_t bytes() const { return pool_.bytes() + rank_.bytes() + scale_.bytes() + pages_.bytes() + dora_.bytes() + dora_on_.bytes(); }
  size_t page_bytes() const { return size_t(lay_.page_elems) * ty_size(ty_); }
  bool enabled() const { return max_adapters_ > 0 && pages_count_ > 0; }

 private:
  Ty ty_;
  int layers_, max_adapters_, max_rank_, pages_count_;
  LoraLayout lay_;
  DevBuf pool_, rank_, scale_, pages_, dora_, dora_on_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_[2] = {nullptr, nullptr};
  PinnedBuf staging_[2], tables_;
  std::mutex write_mu_;            // serialises writers (held for a whole upload)
  mutable std::mutex meta_mu_;     // guards slot_rank_ (held briefly; steps read it)
  std::vector<int> slot_rank_;
  std::vector<uint8_t> slot_dora_;
};

}  // namespace cu
}  // namespace lp
