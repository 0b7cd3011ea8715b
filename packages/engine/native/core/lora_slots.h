// The one allocator of LoRA adapter slots and pool pages, and the one count of who uses them. The
// binding owns it; the backends own only the memory the pages' bytes live in (native/cpu/lora_pool,
// native/cuda/lora_pool) and are told which slot and pages to write.
//
// A slot goes Free -> Loading (reserve: its pages taken, the backend writing them) -> Bound
// (commit: steps may name it) -> Free (release: pages back). Pins count the users of a bound slot:
// each running step pins the slots of its segments for its duration, and a holder that spans steps
// (Engine.generate()) pins its adapter for its own duration. A pinned slot cannot be released.
// Thread-safe: reserve/release/pin run on the JS thread, commit/abort/unpin on worker threads.
#pragma once
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

namespace lp {

class LoraSlots {
 public:
  struct Reservation {
    int slot = -1;
    std::vector<int> pages;  // page of rank-row j
  };

  void reset(int max_adapters, int pages);
  // Takes a free slot and `pages` free pages, or throws EngineFailure ADAPTER_POOL_FULL.
  Reservation reserve(int pages);
  void commit(int slot);  // the backend holds the adapter: steps may name the slot
  void abort(int slot);   // the write failed: slot and pages are free again
  // Frees a bound slot. `clear` (the backend forgetting the slot) runs under the allocator's lock,
  // before the pages can be handed out again. Throws ADAPTER_NOT_FOUND (not bound) or ADAPTER_IN_USE.
  void release(int slot, const std::function<void()>& clear);

  // Pins each distinct slot >= 0 of `slots` once; every one must be bound (the caller validated
  // that on this thread). Returns the slots pinned, for unpin.
  std::vector<int> pin_all(const std::vector<int32_t>& slots);
  void pin(int slot);  // throws ADAPTER_NOT_FOUND when the slot is not bound
  void unpin(int slot);
  void unpin_all(const std::vector<int>& slots);

  std::vector<bool> bound() const;  // per slot: may a step name it
  int pins(int slot) const;
  int free_pages() const;
  int free_slots() const;

 private:
  enum class State : uint8_t { Free, Loading, Bound };
  struct Slot {
    State state = State::Free;
    int pins = 0;
    std::vector<int> pages;
  };
  bool is_bound(int slot) const { return slot >= 0 && slot < int(slots_.size()) && slots_[size_t(slot)].state == State::Bound; }
  void free_locked(int slot);

  mutable std::mutex mu_;
  std::vector<Slot> slots_;
  std::vector<int> free_pages_;  // a stack: the lowest page index is handed out first
};

}  // namespace lp
