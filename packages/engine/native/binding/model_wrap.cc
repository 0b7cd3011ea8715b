// NativeModel: one ObjectWrap per loaded model. Every slow call (load, step, adapter upload, close)
// runs on a libuv worker thread as an AsyncWorker and returns a Promise; failures reject with an
// Error whose message starts with "[CODE]" and whose `code` property holds CODE.
#include <napi.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <exception>
#include <shared_mutex>
#include <thread>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "../core/backend.h"
#include "js_convert.h"
#include "../cpu/kernels.h"
#include "../cpu/sampler.h"

namespace lp {

namespace {

struct SlotState {
  bool bound = false, loading = false;
  int in_use = 0;
  std::vector<int> pages;
};

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
  std::mutex mu;        // guards slots, free_pages, closed
  std::mutex step_mu;   // one step at a time
  std::shared_mutex life_mu;  // shared by calls that use the backend, exclusive for close
  LoadedSpec loaded;
  std::unique_ptr<Backend> backend;
  std::vector<SlotState> slots;
  std::vector<int> free_pages;
  bool closed = false;
};

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

class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, std::function<void()> work, std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), done_(std::move(done)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
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
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(done_ ? done_(env) : env.Undefined());
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    Napi::Error err = Napi::Error::New(Env(), e.Message());
    err.Set("code", Napi::String::New(Env(), code_));
    deferred_.Reject(err.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<void()> work_;
  std::function<Napi::Value(Napi::Env)> done_;
  std::string code_ = "NATIVE";
};

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

}  // namespace

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod("load", &NativeModel::Load), InstanceMethod("step", &NativeModel::Step),
                        InstanceMethod("loadAdapter", &NativeModel::LoadAdapter),
                        InstanceMethod("supplyMasks", &NativeModel::SupplyMasks), InstanceMethod("failMasks", &NativeModel::FailMasks),
                        InstanceMethod("unloadAdapter", &NativeModel::UnloadAdapter), InstanceMethod("info", &NativeModel::Info),
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
            st->slots.assign(size_t(s.max_adapters), SlotState{});
            for (int p = s.lora_pages - 1; p >= 0; p--) st->free_pages.push_back(p);
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
      std::vector<bool> bound;
      {
        std::lock_guard<std::mutex> lock(st_->mu);
        for (auto& s : st_->slots) bound.push_back(s.bound);
      }
      auto in = std::make_shared<StepInput>(parse_step(info[0].As<Napi::Object>(), st_->loaded.spec, bound));
      // Pin the slots this step reads so they cannot be unloaded while it runs.
      std::vector<int> used;
      {
        std::lock_guard<std::mutex> lock(st_->mu);
        for (int32_t s : in->seg_slot)
          if (s >= 0) {
            st_->slots[size_t(s)].in_use++;
            used.push_back(s);
          }
      }
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
      auto release = [st, used] {
        std::lock_guard<std::mutex> lock(st->mu);
        for (int s : used) st->slots[size_t(s)].in_use--;
      };
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
      const AdapterSpec* spec = &raw->spec;
      int slot = -1;
      std::vector<int> pages;
      {
        std::lock_guard<std::mutex> lock(st_->mu);
        for (size_t i = 0; i < st_->slots.size(); i++)
          if (!st_->slots[i].bound && !st_->slots[i].loading) { slot = int(i); break; }
        if (slot < 0) throw EngineFailure("ADAPTER_POOL_FULL", "all " + std::to_string(st_->slots.size()) + " adapter slots are taken");
        if (int(st_->free_pages.size()) < spec->max_rank)
          throw EngineFailure("ADAPTER_POOL_FULL", "the LoRA pool has " + std::to_string(st_->free_pages.size()) + " free rank pages, the adapter needs " + std::to_string(spec->max_rank));
        for (int j = 0; j < spec->max_rank; j++) {
          pages.push_back(st_->free_pages.back());
          st_->free_pages.pop_back();
        }
        st_->slots[size_t(slot)].loading = true;
        st_->slots[size_t(slot)].pages = pages;
      }
      auto st = st_;
      auto* w = new PromiseWorker(
          env,
          [st, raw, slot, pages] {
            try {
              run_at_background_priority([&] {
                raw->widen();
                std::shared_lock<std::shared_mutex> life(st->life_mu);
                if (!st->backend) throw EngineFailure("ENGINE_CLOSED", "the model has been closed");
                st->backend->write_adapter(slot, pages, raw->spec);
              });
            } catch (...) {
              std::lock_guard<std::mutex> lock(st->mu);
              st->slots[size_t(slot)] = SlotState{};
              for (int p : pages) st->free_pages.push_back(p);
              throw;
            }
            std::lock_guard<std::mutex> lock(st->mu);
            st->slots[size_t(slot)].loading = false;
            st->slots[size_t(slot)].bound = true;
          },
          [slot](Napi::Env e) -> Napi::Value { return Napi::Number::New(e, slot); });
      auto p = w->promise();
      w->Queue();
      return p;
    } catch (const EngineFailure& f) {
      return reject_now(env, f);
    }
  }

  Napi::Value UnloadAdapter(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      require_open();
      if (info.Length() < 1 || !info[0].IsNumber()) throw EngineFailure("INVALID_ARGUMENT", "unloadAdapter(slot) needs a slot number");
      int slot = info[0].As<Napi::Number>().Int32Value();
      std::lock_guard<std::mutex> lock(st_->mu);
      if (slot < 0 || slot >= int(st_->slots.size()) || !st_->slots[size_t(slot)].bound)
        throw EngineFailure("ADAPTER_NOT_FOUND", "slot " + std::to_string(slot) + " holds no adapter");
      SlotState& s = st_->slots[size_t(slot)];
      if (s.in_use > 0) throw EngineFailure("ADAPTER_IN_USE", "slot " + std::to_string(slot) + " is used by a running step");
      st_->backend->clear_slot(slot);
      for (int p : s.pages) st_->free_pages.push_back(p);
      s = SlotState{};
    } catch (const EngineFailure& f) {
      throw_js(env, f);
    }
    return env.Undefined();
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    std::lock_guard<std::mutex> lock(st_->mu);
    o.Set("backend", st_->backend ? Napi::Value(Napi::String::New(env, st_->backend->name())) : env.Null());
    o.Set("bytesAllocated", Napi::Number::New(env, st_->backend ? double(st_->backend->bytes_allocated()) : 0));
    o.Set("freeLoraPages", Napi::Number::New(env, double(st_->free_pages.size())));
    int free_slots = 0;
    for (auto& s : st_->slots) free_slots += (!s.bound && !s.loading);
    o.Set("freeSlots", Napi::Number::New(env, free_slots));
    o.Set("closed", Napi::Boolean::New(env, st_->closed));
    return o;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    {
      std::lock_guard<std::mutex> lock(st_->mu);
      st_->closed = true;
    }
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
