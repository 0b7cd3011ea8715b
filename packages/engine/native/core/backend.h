// The contract every backend (CPU, CUDA) implements. The binding layer (native/binding) validates
// every index and size before a call reaches a backend, so backends may trust their inputs.
#pragma once
#include <cstdint>
#include <memory>
#include <functional>
#include <string>
#include <vector>

namespace lp {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// A weight matrix or vector inside a memory-mapped file (row-major, rows x cols; vectors have rows = 1).
struct WeightRef {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
};

// The seven projection modules a LoRA adapter may target, in a fixed order.
enum Module : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kNumModules };

struct LayerWeights {
  WeightRef attn_norm, ffn_norm;            // [hidden]
  WeightRef proj[kNumModules];              // [out, in] for q,k,v,o,gate,up,down
  WeightRef q_bias, k_bias, v_bias;         // [heads*head_dim], [kv*head_dim] x2; data == nullptr when absent
  WeightRef q_norm, k_norm;                 // [head_dim] per-head RMSNorm of q and k before rotary (ModelSpec::qk_norm)
};

struct ModelSpec {
  int vocab = 0, hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  float rms_eps = 1e-5f;
  int sliding_window = 0;                   // 0 = full attention
  bool qk_norm = false;                     // Qwen3: every layer has q_norm and k_norm
  std::vector<float> inv_freq;              // [head_dim / 2], rope scaling already applied
  WeightRef embed;                          // [vocab, hidden]
  WeightRef final_norm;                     // [hidden]
  WeightRef lm_head;                        // [vocab, hidden] (== embed when tied)
  std::vector<LayerWeights> layer;
  // Paged KV cache.
  int kv_blocks = 0, block_size = 16;
  // LoRA pool: `lora_pages` rank-rows shared by at most `max_adapters` adapters of rank <= max_rank.
  int max_adapters = 0, max_rank = 0, lora_pages = 0;
  DType lora_dtype = DType::F32;            // storage of LoRA pages: F32 or BF16
  int threads = 0;                          // 0 = all hardware threads
  // Benchmarks (CUDA backend only): ignore the WeightRefs' data and fill every weight on the device
  // with deterministic random values; the dtype is that of layer 0's q WeightRef.
  bool random_weights = false;
  uint64_t random_seed = 0;
};

// Input and output sizes of module m (for LoRA A rows and B columns).
inline int module_in(const ModelSpec& s, int m) {
  return m == kO ? s.heads * s.head_dim : (m == kDown ? s.intermediate : s.hidden);
}
inline int module_out(const ModelSpec& s, int m) {
  switch (m) {
    case kQ: return s.heads * s.head_dim;
    case kK: case kV: return s.kv_heads * s.head_dim;
    case kGate: case kUp: return s.intermediate;
    default: return s.hidden;
  }
}

// One adapter as it arrives from the loader: per (layer, module) rank, scaling and float32 weights.
struct AdapterSpec {
  int max_rank = 0;                         // pages the adapter occupies = its largest module rank
  std::vector<int> rank;                    // [layers * kNumModules], 0 = module not adapted
  std::vector<float> scale;                 // [layers * kNumModules]
  std::vector<std::vector<float>> a;        // [layers * kNumModules] -> A [rank, in]
  std::vector<std::vector<float>> b;        // [layers * kNumModules] -> B [out, rank]
  // DoRA: per module the magnitude m [out] as stored (empty: plain LoRA on that module), and the
  // per-output-row scale g = m / ||W + scale * B A||_2 the backends apply (core/dora.h fills it).
  std::vector<std::vector<float>> magnitude;
  std::vector<std::vector<float>> dora_scale;
};

struct SamplingParams {
  float temperature = 0.f;                  // 0 = greedy
  int top_k = 0;                            // 0 = off
  float top_p = 1.f, min_p = 0.f;
  float repetition_penalty = 1.f, presence_penalty = 0.f, frequency_penalty = 0.f;
  uint64_t seed = 0;
  int draw = 0;                             // index of this draw in the sequence (seeds the RNG)
  int top_logprobs = 0;                     // alternatives to return
  bool want_logprob = true;                 // false: the chosen token's log-probability may be skipped (NaN)
};

// One forward step over a mixed batch. Tokens of one sequence form one segment, in order.
struct StepInput {
  std::vector<int32_t> tokens;              // [T]
  std::vector<int32_t> positions;           // [T]
  std::vector<int32_t> seg_offsets;         // [S + 1]
  std::vector<int32_t> seg_slot;            // [S] adapter slot, -1 = base model
  std::vector<int32_t> block_offsets;       // [S + 1] into block_table
  std::vector<int32_t> block_table;         // concatenated per-segment block tables
  std::vector<uint8_t> seg_sample;          // [S] sample one token after the segment's last position
  std::vector<uint8_t> seg_all_logits;      // [S] return logits of every position in the segment
  std::vector<SamplingParams> sampling;     // [S]
  std::vector<int32_t> hist_offsets;        // [S + 1] penalty history (prompt then generated tokens)
  std::vector<int32_t> hist_tokens;
  std::vector<int32_t> hist_generated_start;// [S] index in the history where generated tokens begin
  std::vector<int32_t> seg_mask;            // [S] index into masks, -1 = all tokens allowed
  std::vector<uint32_t> masks;              // [num_masks * ceil(vocab / 32)] allowed-token bitmasks
  int max_top_logprobs = 0;
};

struct StepOutput {
  std::vector<int32_t> token;               // [S] sampled token, -1 when the segment does not sample
  std::vector<float> logprob;               // [S]
  std::vector<int32_t> top_ids;             // [S * max_top_logprobs]
  std::vector<float> top_logprobs;          // [S * max_top_logprobs]
  std::vector<float> logits;                // rows of all-logits segments, in segment order, [rows, vocab]
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // await_masks, when set, is called once the forward pass is under way and before sampling: it
  // blocks until the allowed-token masks (computed by the caller meanwhile) are written into
  // in.masks (same size as given; in.seg_mask unchanged), or throws EngineFailure.
  virtual void step(const StepInput& in, StepOutput& out, const std::function<void()>& await_masks = {}) = 0;
  // LoRA memory only: which slot and pages an adapter gets, and when they are free again, is decided
  // by the binding's allocator (core/lora_slots.h); a step names only slots it has bound.
  // Copies an adapter into the pool pages given (pages.size() == spec.max_rank) and binds it to slot.
  virtual void write_adapter(int slot, const std::vector<int>& pages, const AdapterSpec& spec) = 0;
  virtual void clear_slot(int slot) = 0;
  virtual size_t lora_page_bytes() const = 0;  // the memory one rank-row page takes
  virtual size_t bytes_allocated() const = 0;
};

// Failures carry a code the JS side maps to EngineError codes ("[CODE] message").
struct EngineFailure : std::exception {
  std::string code, message, full;
  EngineFailure(std::string c, std::string m) : code(std::move(c)), message(std::move(m)), full("[" + code + "] " + message) {}
  const char* what() const noexcept override { return full.c_str(); }
};

std::unique_ptr<Backend> make_cpu_backend(const ModelSpec& spec);
#ifdef LORAPLEX_WITH_CUDA
std::unique_ptr<Backend> make_cuda_backend(const ModelSpec& spec);
int cuda_device_count();
#endif

}  // namespace lp
