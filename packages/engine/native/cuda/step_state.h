// Everything one step needs besides weights, KV cache and LoRA pool: the host-side plan of the
// step, its inputs packed into one pinned buffer (uploaded with at most three copies), and the
// device activation buffers. Buffers only grow (doubling); a growth moves device pointers, which
// the caller must treat as invalidating every captured CUDA graph.
#pragma once
#include <vector>

#include "lora_pool.h"
#include "memory.h"

namespace lp {
namespace cu {

constexpr int kDecodeMaxT = 64;  // steps up to this many tokens take the decode path (graphable)
constexpr int kMaxTop = 20;      // the binding caps top_logprobs at 20

struct StepPlan {
  int T = 0, S = 0, R = 0, R_all = 0;  // tokens, segments, logit rows, rows returned as logits
  bool decode = false;       // decode path: LoRA expand fused into consumers, decode attention for all
  bool lora = false;         // some token uses an adapter
  bool dora = false;         // some token's adapter has DoRA modules: unfused expands, no graph
  int rank_chunks = 0;       // ceil(largest adapter rank in the step / kRankChunk)
  int n_items = 0;           // LoRA work items
  int n_tiles = 0, n_list = 0;  // prefill attention tiles; tokens for the decode attention kernel
  int attn_splits = 1;       // context splits of the decode attention kernel
  int max_top = 0;
  size_t n_bt = 0, n_hist = 0, n_mask_words = 0;
};

// Device pointers into the step buffers (valid until the next growth).
struct StepPtrs {
  // inputs
  int* hdr = nullptr;  // [0] = number of LoRA items, [1] = top-n stride
  int *tokens = nullptr, *positions = nullptr, *tok_seg = nullptr, *tok_slot = nullptr, *tok_list = nullptr;  // [T]
  int* rows = nullptr;                                                   // [R]
  int *seg_block_off = nullptr, *hist_off = nullptr;                     // [S + 1]
  int *sample_row = nullptr, *gen_start = nullptr, *seg_mask = nullptr;  // [S]
  LoraItem* items = nullptr;                                             // [T]
  AttnTile* tiles = nullptr;                                             // [T]
  SampleParamsDev* params = nullptr;                                     // [S]
  int *block_table = nullptr, *hist = nullptr;
  uint32_t* masks = nullptr;
  // activations
  float* x = nullptr;      // [T, H] f32 residual stream
  void* h = nullptr;       // [T, H] T normed input of the next projection
  float* qkv = nullptr;    // [T, (nh + 2 nkv) D] f32
  float* q = nullptr;      // [T, nh, D] f32 after rotary
  void* att = nullptr;     // [T, nh D] T attention output
  float* gu = nullptr;     // [T, 2 I] f32 gate | up
  void* act = nullptr;     // [T, I] T silu(gate) * up
  float* v = nullptr;      // [T, 7, max_rank] f32 LoRA shrink results
  void* hrows = nullptr;   // [R, H] T final-normed rows that need logits
  float* logits = nullptr; // [R, V] f32
  float* work = nullptr;   // [S, V] f32 sampler scratch
  uint32_t* bits = nullptr;// [S, 2 ceil(V / 32)] sampler scratch
  // outputs (one contiguous block): token [S], logprob [S], error [S], top ids [S, 20], top lp [S, 20]
  int* o_token = nullptr; float* o_logprob = nullptr; int* o_error = nullptr; int* o_top_ids = nullptr; float* o_top_lp = nullptr;
  GemmScratch gemm;
  float* attn_ws = nullptr; int* attn_counters = nullptr;
};

class StepState {
 public:
  StepState(const ModelSpec& s, Ty ty, int num_sms);
  // Plans the step and packs its inputs into pinned memory. Returns true if buffers moved.
  bool prepare(const StepInput& in, const DeviceLora& lora, StepPlan& p);
  void upload(const StepPlan& p, cudaStream_t st);
  void upload_masks(const StepPlan& p, const StepInput& in, cudaStream_t st);  // deferred masks, same size as prepared
  void download(const StepPlan& p, cudaStream_t st);   // outputs and returned logits to pinned memory
  void unpack(const StepPlan& p, const StepInput& in, StepOutput& out) const;  // after the stream synchronised
  const StepPtrs& ptrs() const { return d_; }
  size_t bytes() const;

 private:
  struct Layout {  // offsets in 32-bit words, each region 16-byte aligned
    size_t hdr, tokens, positions, tok_seg, tok_slot, tok_list, rows, seg_block_off, sample_row, hist_off, gen_start, seg_mask,
        items, tiles, params, block_table, hist, masks, total;
  };
  void layout(Layout& L) const;
  bool ensure(const StepPlan& p, size_t ws_floats, int ws_counters, size_t attn_floats, int attn_counters);
  void point();

  ModelSpec s_;
  Ty ty_;
  int sms_;
  int cap_t_ = 0, cap_s_ = 0, cap_r_ = 0;
  size_t cap_bt_ = 0, cap_hist_ = 0, cap_mask_ = 0, cap_gws_ = 0, cap_aws_ = 0;
  int cap_gcnt_ = 0, cap_acnt_ = 0;
  Layout lay_{};
  PinnedBuf in_host_, out_host_;
  DevBuf in_dev_, out_dev_, x_, h_, qkv_, q_, att_, gu_, act_, v_, hrows_, logits_, work_, bits_, gws_, gcnt_, aws_, acnt_;
  StepPtrs d_;
  std::vector<int> scratch_rows_;
};

}  // namespace cu
}  // namespace lp
