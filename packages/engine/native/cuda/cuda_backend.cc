// The CUDA backend: the same forward pass as cpu/cpu_backend.cc over one mixed batch, on one GPU.
//
// Per layer (T tokens; decode path = T <= 64):
//   h = rmsnorm(x)                  [T, H] T        (fused with the previous residual's LoRA expand)
//   qkv = h @ Wqkv^T                [T, QKV] f32    (+ LoRA shrink of q, k, v in the same launch)
//   q, cache <- rope(qkv + bias)    [T, nh, D] f32  (+ LoRA expand of q, k, v on the decode path)
//   att = attention(q, cache)       [T, nh D] T     (decode: split-context; prefill: tiled mma)
//   x += att @ Wo^T                 [T, H] f32      (+ LoRA shrink of o)
//   h = rmsnorm(x)                                  (+ LoRA expand of o)
//   gu = h @ Wgate_up^T             [T, 2I] f32     (+ LoRA shrink of gate, up)
//   act = silu(gate) * up           [T, I] T        (+ LoRA expand of gate, up)
//   x += act @ Wdown^T                              (+ LoRA shrink of down; expand in the next norm)
// then the final norm over the rows that need logits, the LM head and the sampler.
// On the prefill path (T > 64) the expands run as separate segmented kernels instead.
//
// Streams: `stream_` (compute, non-blocking) runs steps; adapter uploads use DeviceLora's own
// stream from another thread. Decode-path steps are captured as CUDA graphs keyed by
// (tokens, segments, logit rows, LoRA rank chunks): every host-side launch parameter is a function
// of that key, and everything else (token ids, positions, block tables, slots, item counts,
// sampling parameters) lives in fixed device buffers refreshed by three copies before each replay.
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>

#include "lora_pool.h"
#include "step_state.h"
#include "weights.h"

namespace lp {

namespace {

using namespace cu;

int env_int(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : dflt;
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const ModelSpec& s) : s_(s) {
    const int n = cuda_device_count();
    if (n <= 0) throw EngineFailure("BACKEND_UNAVAILABLE", "no CUDA device is available");
    device_ = env_int("LORAPLEX_CUDA_DEVICE", 0);
    if (device_ < 0 || device_ >= n) throw EngineFailure("BACKEND_UNAVAILABLE", "LORAPLEX_CUDA_DEVICE names no device");
    graphs_on_ = env_int("LORAPLEX_CUDA_GRAPHS", 1) != 0;
    check(cudaSetDevice(device_), "cudaSetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    if (prop.major < 8) throw EngineFailure("BACKEND_UNAVAILABLE", std::string("the CUDA backend needs compute capability 8.0 or newer; ") + prop.name + " has " + std::to_string(prop.major) + "." + std::to_string(prop.minor));
    sms_ = prop.multiProcessorCount;
    if (s.head_dim > kMaxHeadDim || s.head_dim % 2 != 0)
      throw EngineFailure("BACKEND_UNAVAILABLE", "the CUDA backend needs an even head_dim <= 256");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
    w_ = std::make_unique<DeviceWeights>(s, stream_);
    ty_ = w_->ty();
    const size_t kv_elems = size_t(s.kv_blocks) * s.layers * 2 * s.kv_heads * size_t(s.block_size) * s.head_dim;
    kv_.alloc(kv_elems * ty_size(ty_));
    check(cudaMemsetAsync(kv_.get(), 0, kv_.bytes(), stream_), "kv cache init");
    lora_ = std::make_unique<DeviceLora>(s, ty_);
    state_ = std::make_unique<StepState>(s, ty_, sms_);
    check(cudaStreamSynchronize(stream_), "backend init");
    s_.layer.clear();  // host weight pointers are not needed after the upload
  }

  ~CudaBackend() override {
    if (stream_) cudaStreamSynchronize(stream_);
    clear_graphs();
    state_.reset();
    lora_.reset();
    kv_.release();
    w_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }
  size_t bytes_allocated() const override { return w_->bytes() + kv_.bytes() + lora_->bytes() + state_->bytes(); }

  void write_adapter(int slot, const std::vector<int>& pages, const AdapterSpec& a) override {
    check(cudaSetDevice(device_), "cudaSetDevice");  // the current device is per host thread
    lora_->write(slot, pages, a);
  }
  void clear_slot(int slot) override { lora_->clear(slot); }
  size_t lora_page_bytes() const override { return lora_->page_bytes(); }

  void step(const StepInput& in, StepOutput& out, const std::function<void()>& await_masks) override {
    std::lock_guard<std::mutex> lock(mu_);
    check(cudaSetDevice(device_), "cudaSetDevice");
    StepPlan p;
    if (state_->prepare(in, *lora_, p)) clear_graphs();
    state_->upload(p, stream_);
    const bool deferred = bool(await_masks);
    run(p, !deferred);
    if (deferred) {
      // Deferred masks (JSON mode): the GPU runs the forward pass queued above while the host
      // waits for the masks; then they are uploaded and sampling is queued behind the forward pass.
      await_masks();
      state_->upload_masks(p, in, stream_);
      sample_step(p);
    }
    state_->download(p, stream_);
    check(cudaStreamSynchronize(stream_), "step");
    state_->unpack(p, in, out);
  }

 private:
  using Key = std::tuple<int, int, int, int, bool>;

  void clear_graphs() {
    for (auto& g : graphs_) cudaGraphExecDestroy(g.second);
    graphs_.clear();
    seen_.clear();
  }

  // Replays the step's graph when its shape was captured before; captures it the second time a
  // shape appears (the first run is eager, so module loading and attribute setup stay outside).
  void run(const StepPlan& p, bool with_sample) {
    if (!graphs_on_ || !p.decode || p.dora) {  // DoRA steps pass the host's item count to their expands
      forward(p, with_sample);
      return;
    }
    const Key key{p.T, p.S, p.R, p.rank_chunks, with_sample};
    auto it = graphs_.find(key);
    if (it != graphs_.end()) {
      check(cudaGraphLaunch(it->second, stream_), "cudaGraphLaunch");
      return;
    }
    if (++seen_[key] < 2) {
      forward(p, with_sample);
      return;
    }
    if (graphs_.size() >= 128) clear_graphs();
    cudaGraph_t g = nullptr;
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    try {
      forward(p, with_sample);
    } catch (...) {
      cudaStreamEndCapture(stream_, &g);
      if (g) cudaGraphDestroy(g);
      throw;
    }
    check(cudaStreamEndCapture(stream_, &g), "cudaStreamEndCapture");
    cudaGraphExec_t ex = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&ex, g, 0);
    cudaGraphDestroy(g);
    check(e, "cudaGraphInstantiate");
    graphs_[key] = ex;
    check(cudaGraphLaunch(ex, stream_), "cudaGraphLaunch");
  }

  void forward(const StepPlan& p, bool with_sample) {
    const StepPtrs& d = state_->ptrs();
    const cudaStream_t st = stream_;
    const int T = p.T, H = s_.hidden, I = s_.intermediate, D = s_.head_dim, nh = s_.heads, nkv = s_.kv_heads;
    const int QD = nh * D, KVD = nkv * D, QKV = QD + 2 * KVD, L = s_.layers;
    const LoraLayout& lay = lora_->layout();
    // DoRA scales a module's whole output row (g * (W x + delta)), so its steps expand separately,
    // and o/down project into a scratch row (gu, free at both points) before the residual add.
    const bool fused = p.lora && p.decode && !p.dora;

    auto shrink = [&](int layer, std::initializer_list<int> mods) {
      ShrinkArgs sa;
      if (!p.lora) return sa;
      sa.on = true; sa.lay = lay; sa.layer = layer; sa.nmod = int(mods.size());
      int i = 0;
      for (int m : mods) sa.mods[i++] = m;
      sa.items = d.items; sa.n_items = d.hdr;
      sa.max_items = p.decode ? T : p.n_items;  // decode: fixed grid, the live count is read on the device
      sa.rank_chunks = p.rank_chunks; sa.v = d.v;
      return sa;
    };
    auto project = [&](const void* x, const void* w, float* y, int N, int K, bool acc, ShrinkArgs sa) {
      GemmArgs g;
      g.ty = ty_; g.x = x; g.w = w; g.y = y; g.ldy = N; g.M = T; g.N = N; g.K = K; g.accumulate = acc; g.lora = sa;
      gemm(g, d.gemm, sms_, st);
    };
    auto expand = [&](int layer, std::initializer_list<int> mods, std::initializer_list<int> cols, float* y, int ldy) {
      if (!p.lora || fused) return;
      ExpandArgs e;
      e.lay = lay; e.ty = ty_; e.layer = layer; e.nmod = int(mods.size());
      int i = 0;
      for (int m : mods) e.mods[i++] = m;
      i = 0;
      for (int c : cols) e.col_off[i++] = c;
      e.y = y; e.ldy = ldy; e.items = d.items; e.n_items = p.n_items; e.v = d.v;
      lora_expand(e, st);
    };
    auto fx = [&](int layer) {
      FusedExpand f;
      f.on = fused; f.lay = lay; f.layer = layer; f.tok_slot = d.tok_slot; f.v = d.v;
      return f;
    };
    auto norm = [&](const float* w, void* out, const int* rows, int nrows, int mod, const FusedExpand& ex) {
      ResNormArgs r;
      r.ty = ty_; r.x = d.x; r.w = w; r.out = out; r.rows = rows; r.nrows = nrows; r.H = H; r.eps = s_.rms_eps; r.mod = mod; r.ex = ex;
      resnorm(r, st);
    };

    AttnArgs aa;
    aa.ty = ty_; aa.q = d.q; aa.kv = kv_.get(); aa.out = d.att;
    aa.positions = d.positions; aa.tok_seg = d.tok_seg; aa.seg_block_off = d.seg_block_off; aa.block_table = d.block_table;
    aa.nh = nh; aa.nkv = nkv; aa.D = D; aa.layers = L; aa.block_size = s_.block_size; aa.window = s_.sliding_window;
    aa.scale = 1.0f / std::sqrt(float(D));
    aa.tok_list = p.decode ? nullptr : d.tok_list; aa.n_tok = p.n_list; aa.splits = p.attn_splits;
    aa.ws = d.attn_ws; aa.counters = d.attn_counters; aa.tiles = d.tiles; aa.n_tiles = p.n_tiles;

    embed(ty_, w_->embed(), d.tokens, T, H, d.x, st);
    norm(w_->layer(0).attn_norm, d.h, nullptr, T, kQ, FusedExpand{});
    for (int l = 0; l < L; l++) {
      const DeviceLayer& W = w_->layer(l);
      project(d.h, W.qkv, d.qkv, QKV, H, false, shrink(l, {kQ, kK, kV}));
      expand(l, {kQ, kK, kV}, {0, QD, QD + KVD}, d.qkv, QKV);
      RopeArgs ra;
      ra.ty = ty_; ra.qkv = d.qkv; ra.bias = W.qkv_bias; ra.inv_freq = w_->inv_freq();
      ra.q_norm = W.q_norm; ra.k_norm = W.k_norm; ra.eps = s_.rms_eps;
      ra.positions = d.positions; ra.tok_seg = d.tok_seg; ra.seg_block_off = d.seg_block_off; ra.block_table = d.block_table;
      ra.q = d.q; ra.kv = kv_.get(); ra.M = T; ra.nh = nh; ra.nkv = nkv; ra.D = D; ra.layer = l; ra.layers = L;
      ra.block_size = s_.block_size; ra.ex = fx(l);
      rope_kv(ra, st);
      aa.layer = l;
      attention_decode(aa, st);
      attention_prefill(aa, st);
      if (p.dora) {
        project(d.att, W.o, d.gu, H, QD, false, shrink(l, {kO}));
        expand(l, {kO}, {0}, d.gu, H);
        add_f32(d.x, d.gu, int64_t(T) * H, st);
      } else {
        project(d.att, W.o, d.x, H, QD, true, shrink(l, {kO}));
        expand(l, {kO}, {0}, d.x, H);
      }
      norm(W.ffn_norm, d.h, nullptr, T, kO, fx(l));
      project(d.h, W.gate_up, d.gu, 2 * I, H, false, shrink(l, {kGate, kUp}));
      expand(l, {kGate, kUp}, {0, I}, d.gu, 2 * I);
      silu_mul(ty_, d.gu, d.act, T, I, fx(l), st);
      if (p.dora) {
        project(d.act, W.down, d.gu, H, I, false, shrink(l, {kDown}));
        expand(l, {kDown}, {0}, d.gu, H);
        add_f32(d.x, d.gu, int64_t(T) * H, st);
      } else {
        project(d.act, W.down, d.x, H, I, true, shrink(l, {kDown}));
        expand(l, {kDown}, {0}, d.x, H);
      }
      if (l + 1 < L) norm(w_->layer(l + 1).attn_norm, d.h, nullptr, T, kDown, fx(l));
      else norm(w_->final_norm(), d.hrows, d.rows, p.R, kDown, fx(l));
    }
    if (p.R > 0) {
      GemmArgs g;
      g.ty = ty_; g.x = d.hrows; g.w = w_->lm_head(); g.y = d.logits; g.ldy = s_.vocab; g.M = p.R; g.N = s_.vocab; g.K = H;
      gemm(g, d.gemm, sms_, st);
    }
    if (with_sample) sample_step(p);
  }

  void sample_step(const StepPlan& p) {
    const StepPtrs& d = state_->ptrs();
    const cudaStream_t st = stream_;
    SampleArgs sa;
    sa.logits = d.logits; sa.work = d.work; sa.bits = d.bits; sa.V = s_.vocab; sa.S = p.S;
    sa.sample_row = d.sample_row; sa.params = d.params; sa.hist_off = d.hist_off; sa.hist = d.hist; sa.gen_start = d.gen_start;
    sa.seg_mask = d.seg_mask; sa.masks = d.masks; sa.max_top = d.hdr + 1;
    sa.token = d.o_token; sa.logprob = d.o_logprob; sa.top_ids = d.o_top_ids; sa.top_lp = d.o_top_lp; sa.error = d.o_error;
    sample(sa, st);
  }

  ModelSpec s_;
  int device_ = 0, sms_ = 1;
  bool graphs_on_ = true;
  Ty ty_ = Ty::F32;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<DeviceWeights> w_;
  DevBuf kv_;  // [kv_blocks][layers][2][kv_heads][block_size][head_dim] T
  std::unique_ptr<DeviceLora> lora_;
  std::unique_ptr<StepState> state_;
  std::mutex mu_;
  std::map<Key, cudaGraphExec_t> graphs_;
  std::map<Key, int> seen_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const ModelSpec& spec) { return std::make_unique<CudaBackend>(spec); }

int cuda_device_count() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // no driver / no device: report zero, never throw
    return 0;
  }
  return n;
}

}  // namespace lp
