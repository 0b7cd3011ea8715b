// Plain structs shared by host launchers and device kernels (no CUDA headers needed to include).
#pragma once
#include <cstddef>
#include <cstdint>

namespace lp {
namespace cu {

// Element type of weights, GEMM inputs, KV cache and LoRA pool ("T" in the kernels). Residual
// stream, GEMM outputs, logits and all reductions are always float32.
enum class Ty : int { F32 = 0, F16 = 1, BF16 = 2 };
inline size_t ty_size(Ty t) { return t == Ty::F32 ? 4 : 2; }

constexpr int kMods = 7;          // q, k, v, o, gate, up, down (same order as lp::Module)
constexpr int kRankChunk = 16;    // LoRA ranks one shrink CTA handles
constexpr int kItemTokens = 16;   // tokens of one LoRA work item (a run of tokens sharing a slot)
constexpr int kMaxHeadDim = 256;  // largest head_dim the backend runs (rope_kv stages one head in shared memory)

// Device LoRA pool geometry. A page is one rank-row of one adapter for every layer and module
// (as in cpu/lora_pool.h); each module's A row and B column are padded to a multiple of 8
// elements so that every row starts 16-byte aligned.
//   pool: [pages][layers][modules]{A row [in_pad], B col [out_pad]}   (element type T)
struct LoraLayout {
  const void* pool = nullptr;
  int64_t page_elems = 0, layer_elems = 0;
  int mod_off[kMods] = {}, in[kMods] = {}, out[kMods] = {}, in_pad[kMods] = {};
  const int* slot_rank = nullptr;     // [max_adapters][layers][7], 0 = module not adapted
  const float* slot_scale = nullptr;  // [max_adapters][layers][7]
  const int* slot_pages = nullptr;    // [max_adapters][max_rank]
  int layers = 0, max_rank = 0;
  // DoRA: per (slot, layer) the row scales g of every module, module m's [out] at dora_mod_off[m];
  // slot_dora_on [max_adapters][layers][7] says which modules are DoRA (the others are plain LoRA).
  const float* slot_dora = nullptr;   // [max_adapters][layers][dora_layer_elems]
  const int* slot_dora_on = nullptr;  // [max_adapters][layers][7]
  int64_t dora_layer_elems = 0;
  int dora_mod_off[kMods] = {};
};

// A run of <= kItemTokens consecutive step tokens that share one adapter slot.
struct LoraItem { int slot, tok0, ntok, pad; };

// Per-segment sampling parameters as the sampler kernel reads them.
struct SampleParamsDev {
  float temperature, top_p, min_p, rep, pres, freq;
  int top_k, draw, top_logprobs, pad;
  unsigned long long seed;
};

// Prefill attention tile: up to 64 consecutive tokens of one segment.
struct AttnTile { int seg, tok0, ntok, pad; };

}  // namespace cu
}  // namespace lp
