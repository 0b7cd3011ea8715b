// NativeModel: one ObjectWrap per loaded model. Every slow call (load, step, adapter upload, close)
// runs on a libuv worker thread as an AsyncWorker and returns a Promise; failures reject with an
// Error whose message starts with "[CODE]" and whose `code` property holds CODE. Adapters are
// AdapterHandle objects (adapter_handle.h); slots, pages and pins are counted in ModelState::slots.
#include <napi.h>

#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <thread>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "../core/backend.h"
#include "../core/dora.h"
#include "adapter_handle.h"
#include "js_convert.h"
#include "model_state.h"
#include "../cpu/kernels.h"
#include "../cpu/sampler.h"

namespace lp {

namespace {

// Runs `work` on a short-lived thread at the lowest CPU priority (Linux nice 19) and waits for it.
// Adapter loads run beside decoding steps; on a machine whose cores the step's thread pool already
// fills, a load at normal priority takes a core's share from the step. At nice 19 the load gets
// ~1.5% of a contended core plus the idle time between steps. A thread of its own, because
// an unprivileged process cannot raise a libuv pool thread's priority back once lowered.
void run_at_background_priority(const std::function<void()>& work) {
  std::exception_ptr failure;
  std::thread t([&] {
#if defined(__linux__)
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 19);  // best effort
#endif
    try {
      work();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  t.join();
  if (failure) std::rethrow_exception(failure);
}

}  // namespace

void PromiseWorker::Execute() {
  try {
    work_();
  } catch (const EngineFailure& e) {
    code_ = e.code;
    SetError(e.what());
  } catch (const std::bad_alloc&) {
    code_ = "OUT_OF_MEMORY";
    SetError("[OUT_OF_MEMORY] the engine could not allocate memory");
  } catch (const std::exception& e) {
    code_ = "NATIVE";
    SetError(std::string("[NATIVE] ") + e.what());
  }
}

void PromiseWorker::OnOK() {
  Napi::Env env = Env();
  try {
    deferred_.Resolve(done_ ? done_(env) : env.Undefined());
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  }
}

void PromiseWorker::OnError(const Napi::Error& e) {
  Napi::Error err = Napi::Error::New(Env(), e.Message());
  err.Set("code", Napi::String::New(Env(), code_));
  deferred_.Reject(err.Value());
}

Napi::Value reject_now(Napi::Env env, const EngineFailure& f) {
  auto d = Napi::Promise::Deferred::New(env);
  Napi::Error err = Napi::Error::New(env, f.what());
  err.Set("code", Napi::String::New(env, f.code));
  d.Reject(err.Value());
  return d.Promise();
}

void throw_js(Napi::Env env, const EngineFailure& f) {
  Napi::Error err = Napi::Error::New(env, f.what());
  err.Set("code", Napi::String::New(env, f.code));
  err.ThrowAsJavaScriptException();
}

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod("load", &NativeModel::Load), InstanceMethod("step", &NativeModel::Step),
                        InstanceMethod("loadAdapter", &NativeModel::LoadAdapter),
                        InstanceMethod("supplyMasks", &NativeModel::SupplyMasks), InstanceMethod("failMasks", &NativeModel::FailMasks),
                        InstanceMethod("info", &NativeModel::Info),
                        InstanceMethod("close", &NativeModel::Close)});
  }
  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info), st_(std::make_shared<ModelState>()) {}

 private:
  // Ensures the model is loaded and open; throws EngineFailure otherwise.
  void require_open() {
    if (!st_->backend) throw EngineFailure("ENGINE_CLOSED", "the model is not loaded");
    if (st_->closed) throw EngineFailure("ENGINE_CLOSED", "the model has been closed");
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      if (st_->backend || loading_) throw EngineFailure("INVALID_ARGUMENT", "load() may be called once");
      if (info.Length() < 1 || !info[0].IsObject()) throw EngineFailure("INVALID_ARGUMENT", "load(spec) needs an object");
      auto req = std::make_shared<ModelRequest>(parse_model_request(info[0].As<Napi::Object>()));
      loading_ = true;
      auto st = st_;
      auto* w = new PromiseWorker(
          env,
          [st, req] {
            map_weights(*req, st->loaded);
            const ModelSpec& s = st->loaded.spec;
            if (req->backend == "cpu") {
              st->backend = make_cpu_backend(s);
            } else if (req->backend == "cuda") {
#ifdef LORAPLEX_WITH_CUDA
              st->backend = make_cuda_backend(s);
#else
              throw EngineFailure("BACKEND_UNAVAILABLE", "this build of the engine has no CUDA backend");
#endif
            } else {
              throw EngineFailure("INVALID_ARGUMENT", "unknown backend " + req->backend);
            }
            st->slots.reset(s.max_adapters, s.lora_pages);
          },
          [st](Napi::Env e) -> Napi::Value { return Napi::String::New(e, st->backend->name()); });
      auto p = w->promise();
      w->Queue();
      return p;
    } catch (const EngineFailure& f) {
      return reject_now(env, f);
    }
  }

  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      require_open();
      if (info.Length() < 1 || !info[0].IsObject()) throw EngineFailure("INVALID_ARGUMENT", "step(input) needs an object");
      auto in = std::make_shared<StepInput>(parse_step(info[0].As<Napi::Object>(), st_->loaded.spec, st_->slots.bound()));
      // The step pins the slots it reads, once each, so they cannot be released while it runs.
      const std::vector<int> pinned = st_->slots.pin_all(in->seg_slot);
      // A maskTicket (> 0) defers the masks: in.masks holds placeholders until supplyMasks.
      const Napi::Value tv = info[0].As<Napi::Object>().Get("maskTicket");
      const double ticket = tv.IsNumber() ? tv.As<Napi::Number>().DoubleValue() : 0;
      if (ticket > 0) {
        std::lock_guard<std::mutex> lock(st_->gate.mu);
        st_->gate.ticket = ticket;
        st_->gate.done = false;
        st_->gate.error.clear();
        st_->gate.words = in->masks.size();
        st_->gate.masks.clear();
      }
      auto out = std::make_shared<StepOutput>();
      auto st = st_;
      auto release = [st, pinned] { st->slots.unpin_all(pinned); };
      auto* w = new PromiseWorker(
          env,
          [st, in, out, release, ticket] {
            struct Guard { std::function<void()> f; ~Guard() { f(); } } g{release};
            std::shared_lock<std::shared_mutex> life(st->life_mu);
            std::lock_guard<std::mutex> lock(st->step_mu);
            if (!st->backend) throw EngineFailure("ENGINE_CLOSED", "the model has been closed");
            std::function<void()> await_masks;
            // Runs on this thread between the forward pass and sampling; the input is written
            // here, not by the JS thread, so the backend never reads it while it changes.
            if (ticket > 0) await_masks = [st, ticket, in] {
              std::unique_lock<std::mutex> gl(st->gate.mu);
              st->gate.cv.wait(gl, [&] { return st->gate.ticket != ticket || st->gate.done; });
              if (st->gate.ticket != ticket) throw EngineFailure("NATIVE", "the step's deferred masks were superseded");
              if (!st->gate.error.empty()) throw EngineFailure("MASKS_FAILED", st->gate.error);
              in->masks.swap(st->gate.masks);
            };
            st->backend->step(*in, *out, await_masks);
          },
          [out, in](Napi::Env e) -> Napi::Value { return step_output_to_js(e, *out, in->max_top_logprobs); });
      auto p = w->promise();
      w->Queue();
      return p;
    } catch (const EngineFailure& f) {
      return reject_now(env, f);
    }
  }

  // supplyMasks(ticket, masks): the deferred masks of step `ticket`, as many words as its placeholders.
  // Returns false when no step waits for that ticket (it failed or finished already).
  Napi::Value SupplyMasks(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsTypedArray()) {
      throw_js(env, EngineFailure("INVALID_ARGUMENT", "supplyMasks(ticket, masks: Uint32Array)"));
      return env.Undefined();
    }
    const double ticket = info[0].As<Napi::Number>().DoubleValue();
    Napi::TypedArray ta = info[1].As<Napi::TypedArray>();
    std::lock_guard<std::mutex> lock(st_->gate.mu);
    if (st_->gate.ticket != ticket || st_->gate.done) return Napi::Boolean::New(env, false);
    if (ta.TypedArrayType() != napi_uint32_array || ta.ElementLength() != st_->gate.words) {
      st_->gate.error = "the deferred masks have " + std::to_string(ta.ElementLength()) + " words, the step reserved " + std::to_string(st_->gate.words);
    } else {
      Napi::Uint32Array a = info[1].As<Napi::Uint32Array>();
      st_->gate.masks.assign(a.Data(), a.Data() + a.ElementLength());
    }
    st_->gate.done = true;
    st_->gate.cv.notify_all();
    if (!st_->gate.error.empty()) throw_js(env, EngineFailure("INVALID_ARGUMENT", st_->gate.error));
    return Napi::Boolean::New(env, true);
  }

  // failMasks(ticket, message): the masks of step `ticket` will not come; the step fails with MASKS_FAILED.
  Napi::Value FailMasks(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const double ticket = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    const std::string msg = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "the masks could not be computed";
    std::lock_guard<std::mutex> lock(st_->gate.mu);
    if (st_->gate.ticket != ticket || st_->gate.done) return Napi::Boolean::New(env, false);
    st_->gate.error = msg.empty() ? "the masks could not be computed" : msg;
    st_->gate.done = true;
    st_->gate.cv.notify_all();
    return Napi::Boolean::New(env, true);
  }

  Napi::Value LoadAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      require_open();
      if (info.Length() < 1 || !info[0].IsObject()) throw EngineFailure("INVALID_ARGUMENT", "loadAdapter(spec) needs an object");
      auto raw = std::make_shared<RawAdapter>(parse_adapter(info[0].As<Napi::Object>(), st_->loaded.spec));
      const LoraSlots::Reservation r = st_->slots.reserve(raw->spec.max_rank);
      auto st = st_;
      const int slot = r.slot;
      const std::vector<int> pages = r.pages;
      // DoRA scales (one float per output row of each DoRA module) live beside the pages.
      const double bytes = double(pages.size()) * double(st_->backend->lora_page_bytes()) + double(raw->dora_floats) * 4;
      auto* w = new PromiseWorker(
          env,
          [st, raw, slot, pages] {
            try {
              run_at_background_priority([&] {
                raw->widen();
                std::shared_lock<std::shared_mutex> life(st->life_mu);
                if (!st->backend) throw EngineFailure("ENGINE_CLOSED", "the model has been closed");
                // DoRA row norms read the base weights: under the life lock, so close() cannot unmap them.
                compute_dora_scales(st->loaded.spec, raw->spec);
                st->backend->write_adapter(slot, pages, raw->spec);
              });
            } catch (...) {
              st->slots.abort(slot);
              throw;
            }
            st->slots.commit(slot);
          },
          [st, slot, pages, bytes](Napi::Env e) -> Napi::Value { return AdapterHandle::New(e, st, slot, int(pages.size()), bytes); });
      auto p = w->promise();
      w->Queue();
      return p;
    } catch (const EngineFailure& f) {
      return reject_now(env, f);
    }
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("backend", st_->backend ? Napi::Value(Napi::String::New(env, st_->backend->name())) : env.Null());
    o.Set("bytesAllocated", Napi::Number::New(env, st_->backend ? double(st_->backend->bytes_allocated()) : 0));
    o.Set("freeLoraPages", Napi::Number::New(env, st_->slots.free_pages()));
    o.Set("freeSlots", Napi::Number::New(env, st_->slots.free_slots()));
    o.Set("closed", Napi::Boolean::New(env, st_->closed));
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    st_->closed = true;
    auto st = st_;
    // Waits for a running step (step_mu) before freeing the backend and unmapping the weights.
    auto* w = new PromiseWorker(
        env,
        [st] {
          std::unique_lock<std::shared_mutex> life(st->life_mu);
          st->backend.reset();
          st->loaded.files.clear();
        },
        nullptr);
    auto p = w->promise();
    w->Queue();
    return p;
  }

  std::shared_ptr<ModelState> st_;
  bool loading_ = false;
};

// sampleLogits(logits: Float32Array, sampling: {temperature, topK?, topP?, minP?, seed}, firstDraw,
// draws): Int32Array: the host sampler's tokens for draws firstDraw .. firstDraw + draws - 1 of one
// row of logits (no penalties, no mask). Lets tests compare drawn frequencies with the exact
// softmax of a logits vector they choose.
static Napi::Value SampleLogits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto bad = [&](const char* why) { Napi::TypeError::New(env, std::string("sampleLogits: ") + why).ThrowAsJavaScriptException(); return env.Undefined(); };
  if (info.Length() < 4 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array || !info[1].IsObject() ||
      !info[2].IsNumber() || !info[3].IsNumber())
    return bad("expects (Float32Array logits, sampling object, firstDraw, draws)");
  auto row = info[0].As<Napi::Float32Array>();
  Napi::Object so = info[1].As<Napi::Object>();
  auto num = [&](const char* key, double dflt) { Napi::Value v = so.Get(key); return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : dflt; };
  SamplingParams p;
  p.temperature = float(num("temperature", 1.0));
  p.top_k = int(num("topK", 0));
  p.top_p = float(num("topP", 1.0));
  p.min_p = float(num("minP", 0.0));
  const double seed = num("seed", 0.0), first = info[2].As<Napi::Number>().DoubleValue(), n = info[3].As<Napi::Number>().DoubleValue();
  p.want_logprob = false;
  if (row.ElementLength() == 0 || !(p.temperature >= 0.f) || p.top_k < 0 || !(p.top_p > 0.f && p.top_p <= 1.f) || !(p.min_p >= 0.f && p.min_p <= 1.f) ||
      !(seed >= 0) || !(first >= 0 && first + n <= 2147483647.0) || !(n >= 0 && n <= 1e7))
    return bad("parameters out of range");
  p.seed = uint64_t(seed);
  const int vocab = int(row.ElementLength());
  auto out = Napi::Int32Array::New(env, size_t(n));
  std::vector<float> work(static_cast<size_t>(vocab));
  for (size_t j = 0; j < size_t(n); j++) {
    std::copy(row.Data(), row.Data() + vocab, work.begin());
    p.draw = int(first) + int(j);
    try {
      out[j] = sample_token(work.data(), vocab, p, nullptr, 0, 0, nullptr).token;
    } catch (const EngineFailure& e) {
      return bad(e.message.c_str());
    }
  }
  return out;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData{Napi::Persistent(AdapterHandle::Define(env))});
  exports.Set("NativeModel", NativeModel::Define(env));
  exports.Set("sampleLogits", Napi::Function::New(env, SampleLogits));
  exports.Set("cpuBf16DotProducts", Napi::Boolean::New(env, bf16_dot_products()));
#ifdef LORAPLEX_WITH_CUDA
  exports.Set("cudaDeviceCount", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return Napi::Number::New(i.Env(), cuda_device_count()); }));
  exports.Set("hasCuda", Napi::Boolean::New(env, true));
#else
  exports.Set("cudaDeviceCount", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return Napi::Number::New(i.Env(), 0); }));
  exports.Set("hasCuda", Napi::Boolean::New(env, false));
#endif
  return exports;
}

NODE_API_MODULE(loraplex_native, Init)

}  // namespace lp
