// AdapterHandle: one resident adapter, a native object with its own lifetime. NativeModel's
// loadAdapter(spec) resolves to one; it names the slot steps use, and release() frees the slot and
// its pages (refused with ADAPTER_IN_USE while pinned). A handle dropped without release() frees
// its slot when it is garbage collected. pin()/unpin() hold the adapter across steps (a request
// that spans many); each step pins the slots it reads by itself.
#pragma once
#include <napi.h>

#include <memory>

#include "model_state.h"

namespace lp {

class AdapterHandle : public Napi::ObjectWrap<AdapterHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  // A handle for `slot` (bound in st->slots), occupying `pages` pages of `bytes` bytes in all.
  static Napi::Object New(Napi::Env env, std::shared_ptr<ModelState> st, int slot, int pages, double bytes);
  explicit AdapterHandle(const Napi::CallbackInfo& info);
  ~AdapterHandle() override;

 private:
  Napi::Value Slot(const Napi::CallbackInfo& info);
  Napi::Value Pages(const Napi::CallbackInfo& info);
  Napi::Value Bytes(const Napi::CallbackInfo& info);
  Napi::Value Pins(const Napi::CallbackInfo& info);
  Napi::Value Release(const Napi::CallbackInfo& info);
  Napi::Value Pin(const Napi::CallbackInfo& info);
  Napi::Value Unpin(const Napi::CallbackInfo& info);
  // Frees the slot; throws EngineFailure (ADAPTER_IN_USE) while it is pinned.
  void free_slot();

  std::shared_ptr<ModelState> st_;
  int slot_ = -1;  // -1 once released
  int pages_ = 0;
  double bytes_ = 0;
};

// Per-environment data of the addon: the AdapterHandle constructor.
struct AddonData {
  Napi::FunctionReference adapter_handle;
};

}  // namespace lp
