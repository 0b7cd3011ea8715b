// What a NativeModel and the AdapterHandles it hands out share (kept alive by whichever outlives
// the other), and the Promise plumbing of every slow native call.
#pragma once
#include <napi.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "../core/backend.h"
#include "../core/lora_slots.h"
#include "js_convert.h"

namespace lp {

// Masks that arrive while a step runs (JSON mode): the step's worker thread waits here, after the
// forward pass, for supplyMasks(ticket, masks) or failMasks(ticket, message) from the JS thread.
// The ticket ties a supply to its step: a late supply for a step that already failed is ignored.
struct MaskGate {
  std::mutex mu;
  std::condition_variable cv;
  double ticket = 0;      // the deferred step waiting (0: none)
  bool done = false;      // masks written (or error set) for `ticket`
  std::string error;
  size_t words = 0;                // the size of the step's masks (placeholders until supplied)
  std::vector<uint32_t> masks;     // supplied masks; the step's own thread copies them into its input
};

struct ModelState {
  MaskGate gate;
  std::mutex step_mu;          // one step at a time
  std::shared_mutex life_mu;   // shared by calls that use the backend, exclusive for close
  LoadedSpec loaded;
  std::unique_ptr<Backend> backend;
  LoraSlots slots;             // adapter slots, pool pages and their pins
  bool closed = false;         // set and read on the JS thread
};

// An AsyncWorker settling a Promise: work() on a libuv worker thread, done() back on the JS thread.
// Failures reject with an Error whose message starts with "[CODE]" and whose `code` is CODE.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, std::function<void()> work, std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), done_(std::move(done)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  Napi::Promise::Deferred deferred_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> done_;
  std::string code_ = "NATIVE";
};

Napi::Value reject_now(Napi::Env env, const EngineFailure& f);
void throw_js(Napi::Env env, const EngineFailure& f);

}  // namespace lp
