#include "lora_slots.h"

#include <algorithm>
#include <string>

#include "backend.h"

namespace lp {

void LoraSlots::reset(int max_adapters, int pages) {
  std::lock_guard<std::mutex> lock(mu_);
  slots_.assign(size_t(max_adapters), Slot{});
  free_pages_.clear();
  for (int p = pages - 1; p >= 0; p--) free_pages_.push_back(p);
}

LoraSlots::Reservation LoraSlots::reserve(int pages) {
  std::lock_guard<std::mutex> lock(mu_);
  Reservation r;
  for (size_t i = 0; i < slots_.size(); i++)
    if (slots_[i].state == State::Free) {
      r.slot = int(i);
      break;
    }
  if (r.slot < 0) throw EngineFailure("ADAPTER_POOL_FULL", "all " + std::to_string(slots_.size()) + " adapter slots are taken");
  if (int(free_pages_.size()) < pages)
    throw EngineFailure("ADAPTER_POOL_FULL", "the LoRA pool has " + std::to_string(free_pages_.size()) +
                                                 " free rank pages, the adapter needs " + std::to_string(pages));
  for (int j = 0; j < pages; j++) {
    r.pages.push_back(free_pages_.back());
    free_pages_.pop_back();
  }
  Slot& s = slots_[size_t(r.slot)];
  s.state = State::Loading;
  s.pages = r.pages;
  return r;
}

void LoraSlots::commit(int slot) {
  std::lock_guard<std::mutex> lock(mu_);
  slots_[size_t(slot)].state = State::Bound;
}

void LoraSlots::abort(int slot) {
  std::lock_guard<std::mutex> lock(mu_);
  free_locked(slot);
}

void LoraSlots::free_locked(int slot) {
  Slot& s = slots_[size_t(slot)];
  for (int p : s.pages) free_pages_.push_back(p);
  s = Slot{};
}

void LoraSlots::release(int slot, const std::function<void()>& clear) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!is_bound(slot)) throw EngineFailure("ADAPTER_NOT_FOUND", "slot " + std::to_string(slot) + " holds no adapter");
  const int pins = slots_[size_t(slot)].pins;
  if (pins > 0)
    throw EngineFailure("ADAPTER_IN_USE", "the adapter in slot " + std::to_string(slot) + " is used by " + std::to_string(pins) +
                                              " running step(s) or request(s)");
  if (clear) clear();
  free_locked(slot);
}

std::vector<int> LoraSlots::pin_all(const std::vector<int32_t>& slots) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int> pinned;
  for (int32_t s : slots)
    if (s >= 0 && std::find(pinned.begin(), pinned.end(), int(s)) == pinned.end()) {
      if (!is_bound(s)) {
        for (int p : pinned) slots_[size_t(p)].pins--;
        throw EngineFailure("ADAPTER_NOT_FOUND", "slot " + std::to_string(s) + " holds no adapter");
      }
      slots_[size_t(s)].pins++;
      pinned.push_back(s);
    }
  return pinned;
}

void LoraSlots::pin(int slot) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!is_bound(slot)) throw EngineFailure("ADAPTER_NOT_FOUND", "slot " + std::to_string(slot) + " holds no adapter");
  slots_[size_t(slot)].pins++;
}

void LoraSlots::unpin(int slot) {
  std::lock_guard<std::mutex> lock(mu_);
  if (is_bound(slot) && slots_[size_t(slot)].pins > 0) slots_[size_t(slot)].pins--;
}

void LoraSlots::unpin_all(const std::vector<int>& slots) {
  std::lock_guard<std::mutex> lock(mu_);
  for (int s : slots)
    if (is_bound(s) && slots_[size_t(s)].pins > 0) slots_[size_t(s)].pins--;
}

std::vector<bool> LoraSlots::bound() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<bool> b(slots_.size());
  for (size_t i = 0; i < slots_.size(); i++) b[i] = slots_[i].state == State::Bound;
  return b;
}

int LoraSlots::pins(int slot) const {
  std::lock_guard<std::mutex> lock(mu_);
  return is_bound(slot) ? slots_[size_t(slot)].pins : 0;
}

int LoraSlots::free_pages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return int(free_pages_.size());
}

int LoraSlots::free_slots() const {
  std::lock_guard<std::mutex> lock(mu_);
  return int(std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.state == State::Free; }));
}

}  // namespace lp
