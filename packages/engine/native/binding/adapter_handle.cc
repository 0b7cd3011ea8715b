#include "adapter_handle.h"

namespace lp {

namespace {
struct HandleInit {
  std::shared_ptr<ModelState> st;
  int slot, pages;
  double bytes;
};
}  // namespace

Napi::Function AdapterHandle::Define(Napi::Env env) {
  return DefineClass(env, "AdapterHandle",
                     {InstanceAccessor("slot", &AdapterHandle::Slot, nullptr), InstanceAccessor("pages", &AdapterHandle::Pages, nullptr),
                      InstanceAccessor("bytes", &AdapterHandle::Bytes, nullptr), InstanceAccessor("pins", &AdapterHandle::Pins, nullptr),
                      InstanceMethod("release", &AdapterHandle::Release), InstanceMethod("pin", &AdapterHandle::Pin),
                      InstanceMethod("unpin", &AdapterHandle::Unpin)});
}

Napi::Object AdapterHandle::New(Napi::Env env, std::shared_ptr<ModelState> st, int slot, int pages, double bytes) {
  HandleInit init{std::move(st), slot, pages, bytes};
  return env.GetInstanceData<AddonData>()->adapter_handle.New({Napi::External<HandleInit>::New(env, &init)});
}

AdapterHandle::AdapterHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AdapterHandle>(info) {
  // Only New() makes handles: a handle names a slot the allocator has bound for it.
  if (info.Length() != 1 || !info[0].IsExternal()) {
    Napi::TypeError::New(info.Env(), "AdapterHandle is made by NativeModel.loadAdapter()").ThrowAsJavaScriptException();
    return;
  }
  const HandleInit* init = info[0].As<Napi::External<HandleInit>>().Data();
  st_ = init->st;
  slot_ = init->slot;
  pages_ = init->pages;
  bytes_ = init->bytes;
}

AdapterHandle::~AdapterHandle() {
  // Garbage collected while still holding its slot: free it unless a step or holder pins it
  // (nothing can unpin it later then, but nothing can name it either once the handle is gone).
  if (slot_ < 0 || !st_) return;
  try {
    free_slot();
  } catch (...) {
  }
}

void AdapterHandle::free_slot() {
  if (st_->closed || !st_->backend) {  // the backend and its pool are gone with the model
    slot_ = -1;
    return;
  }
  Backend* be = st_->backend.get();
  const int slot = slot_;
  st_->slots.release(slot, [be, slot] { be->clear_slot(slot); });
  slot_ = -1;
}

Napi::Value AdapterHandle::Slot(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), slot_); }
Napi::Value AdapterHandle::Pages(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pages_); }
Napi::Value AdapterHandle::Bytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), bytes_); }
Napi::Value AdapterHandle::Pins(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), slot_ < 0 || !st_ ? 0 : st_->slots.pins(slot_));
}

// release(): true when this call freed the slot, false when the handle was already released.
Napi::Value AdapterHandle::Release(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (slot_ < 0) return Napi::Boolean::New(env, false);
  try {
    free_slot();
  } catch (const EngineFailure& f) {
    throw_js(env, f);
    return env.Undefined();
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value AdapterHandle::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (slot_ < 0) throw EngineFailure("ADAPTER_NOT_FOUND", "the adapter has been released");
    if (st_->closed) throw EngineFailure("ENGINE_CLOSED", "the model has been closed");
    st_->slots.pin(slot_);
  } catch (const EngineFailure& f) {
    throw_js(env, f);
  }
  return env.Undefined();
}

Napi::Value AdapterHandle::Unpin(const Napi::CallbackInfo& info) {
  if (slot_ >= 0) st_->slots.unpin(slot_);
  return info.Env().Undefined();
}

}  // namespace lp
