// Host-side launchers of every CUDA kernel. The backend (cuda_backend.cc), the kernel tests
// (test-gpu/) and the benchmark (bench/gpu/) all go through these; none needs a CUDA compiler.
// Shapes are noted as [dims]; "T" means the model's element type (Ty), f32 means float32.
#pragma once
#include <cuda_runtime_api.h>

#include <string>

#include "../core/backend.h"
#include "types.h"

namespace lp {
namespace cu {

// Throws EngineFailure("CUDA", ...) when e is an error.
void check(cudaError_t e, const char* what);
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

// ---- GEMM: y[M, N] (+)= x[M, K] @ W[N, K]^T, float32 accumulation ----------------------------
// LoRA shrink riding along the GEMM launch as extra CTAs (same input x):
//   v[t][m][j] = scale(slot, layer, m) * <x[t], A_j(slot, layer, m)> for the modules in `mods`.
struct ShrinkArgs {
  bool on = false;
  LoraLayout lay;
  int layer = 0, nmod = 0, mods[3] = {0, 0, 0};
  const LoraItem* items = nullptr;  // [max_items] device
  const int* n_items = nullptr;     // device scalar (so a captured graph reads the live count)
  int max_items = 0, rank_chunks = 0;
  float* v = nullptr;               // [M][7][max_rank] f32
};
struct GemmArgs {
  Ty ty = Ty::F32;
  const void* x = nullptr;   // [M, K] T, dense rows
  const void* w = nullptr;   // [N, K] T
  float* y = nullptr;        // [M, ldy] f32
  int64_t ldy = 0;
  int M = 0, N = 0, K = 0;
  bool accumulate = false;   // y += instead of y =
  ShrinkArgs lora;
};
// Split-K scratch: partial tiles and one arrival counter per output tile (zeroed once; the last
// CTA of a tile resets its counter, so the same scratch serves every launch and graph replay).
struct GemmScratch {
  float* ws = nullptr; size_t ws_floats = 0;
  int* counters = nullptr; int n_counters = 0;
};
struct GemmNeeds { size_t ws_floats = 0; int counters = 0; };
GemmNeeds gemm_needs(Ty ty, int M, int N, int K, int num_sms);
void gemm(const GemmArgs& a, const GemmScratch& s, int num_sms, cudaStream_t st);

// ---- LoRA expand over work items (prefill path): y[t][col_off[i] + o] += sum_j v[t][m][j] B_j[o]
struct ExpandArgs {
  LoraLayout lay;
  Ty ty = Ty::F32;
  int layer = 0, nmod = 0, mods[3] = {0, 0, 0}, col_off[3] = {0, 0, 0};
  float* y = nullptr; int64_t ldy = 0;   // [M, ldy] f32
  const LoraItem* items = nullptr; int n_items = 0;
  const float* v = nullptr;              // [M][7][max_rank]
};
// For a module the item's slot serves with DoRA: y = g * (y + delta) (y holds the bias-free base output).
void lora_expand(const ExpandArgs& a, cudaStream_t st);
// x[i] += y[i] for i < n (f32).
void add_f32(float* x, const float* y, int64_t n, cudaStream_t st);

// The LoRA expand fused into a consumer kernel (decode path): per token, slot from tok_slot.
struct FusedExpand {
  bool on = false;
  LoraLayout lay;
  int layer = 0;
  const int* tok_slot = nullptr;  // [M] device, -1 = base
  const float* v = nullptr;       // [M][7][max_rank]
};

// ---- elementwise / normalisation ----------------------------------------------------------
// x[t] = embed[tokens[t]] widened to f32. embed [vocab, H] T; x [M, H] f32.
void embed(Ty ty, const void* table, const int* tokens, int M, int H, float* x, cudaStream_t st);
// Residual + RMSNorm: row r reads token t = rows ? rows[r] : r; optionally x[t] += LoRA expand of
// module `mod` first (written back); out[r] = T(w * x[t] / rms(x[t])). x [M, H] f32, w [H] f32, out [n, H] T.
struct ResNormArgs {
  Ty ty = Ty::F32;
  float* x = nullptr; const float* w = nullptr; void* out = nullptr;
  const int* rows = nullptr; int nrows = 0, H = 0;
  float eps = 1e-5f;
  int mod = 0; FusedExpand ex;
};
void resnorm(const ResNormArgs& a, cudaStream_t st);
// Bias, LoRA expand (q, k, v), per-head q/k RMSNorm (Qwen3), rotary embedding, KV-cache append.
// qkv [M, (nh + 2 nkv) * D] f32 -> q [M, nh, D] f32 and the paged cache (layout in cuda/README.md).
struct RopeArgs {
  Ty ty = Ty::F32;
  const float* qkv = nullptr; const float* bias = nullptr;  // bias [(nh + 2 nkv) * D] or null
  const float *q_norm = nullptr, *k_norm = nullptr;         // [D] each, or null (no q/k norm)
  float eps = 1e-6f;                                        // of q_norm / k_norm
  const float* inv_freq = nullptr;                          // [D / 2]
  const int *positions = nullptr, *tok_seg = nullptr, *seg_block_off = nullptr, *block_table = nullptr;
  float* q = nullptr; void* kv = nullptr;
  int M = 0, nh = 0, nkv = 0, D = 0, layer = 0, layers = 0, block_size = 0;
  FusedExpand ex;
};
void rope_kv(const RopeArgs& a, cudaStream_t st);
// act[t][i] = T(silu(gate) * up) with gate/up = gu[t][i], gu[t][I + i] (+ LoRA expand). gu [M, 2I] f32.
void silu_mul(Ty ty, const float* gu, void* act, int M, int I, const FusedExpand& ex, cudaStream_t st);

// ---- attention ----------------------------------------------------------------------------
struct AttnArgs {
  Ty ty = Ty::F32;                       // KV cache and output type
  const float* q = nullptr;              // [M, nh, D] f32 (rotary applied)
  const void* kv = nullptr;              // paged cache
  void* out = nullptr;                   // [M, nh * D] T
  const int *positions = nullptr, *tok_seg = nullptr, *seg_block_off = nullptr, *block_table = nullptr;
  int nh = 0, nkv = 0, D = 0, layer = 0, layers = 0, block_size = 0, window = 0;
  float scale = 1.f;
  // Decode kernel: one query token per CTA group; tokens = tok_list[i] (null = 0..n-1).
  const int* tok_list = nullptr; int n_tok = 0, splits = 1;
  float* ws = nullptr; int* counters = nullptr;
  // Prefill kernel: tiles of up to 64 tokens of one segment.
  const AttnTile* tiles = nullptr; int n_tiles = 0;
};
struct AttnNeeds { size_t ws_floats = 0; int counters = 0; };
int attn_decode_splits(int n_tok, int nh, int nkv, int num_sms);
AttnNeeds attn_decode_needs(int n_tok, int nh, int nkv, int D, int splits);
void attention_decode(const AttnArgs& a, cudaStream_t st);
bool attention_prefill_supported(Ty ty, int D);
void attention_prefill(const AttnArgs& a, cudaStream_t st);

// ---- sampling -----------------------------------------------------------------------------
struct SampleArgs {
  const float* logits = nullptr;   // [R, V] f32 raw
  float* work = nullptr;           // [S, V] f32 scratch (penalised, masked logits)
  uint32_t* bits = nullptr;        // [S, 2 * ceil(V / 32)] scratch
  int V = 0, S = 0;
  const int* sample_row = nullptr; // [S] row of logits, -1 = segment does not sample
  const SampleParamsDev* params = nullptr;     // [S]
  const int *hist_off = nullptr, *hist = nullptr, *gen_start = nullptr, *seg_mask = nullptr;
  const uint32_t* masks = nullptr; // [num_masks, ceil(V / 32)]
  const int* max_top = nullptr;    // device scalar: stride of top outputs
  int* token = nullptr; float* logprob = nullptr; int* top_ids = nullptr; float* top_lp = nullptr; int* error = nullptr;  // [S], [S * max_top]
};
void sample(const SampleArgs& a, cudaStream_t st);

// ---- utilities -----------------------------------------------------------------------------
// Fills n elements with uniform values in [mean - amp, mean + amp) from a counter-based hash.
void fill_random(Ty ty, void* p, size_t n, uint64_t seed, float mean, float amp, cudaStream_t st);
// Bandwidth probe: a plain 16-byte-vector device-to-device copy.
void copy_bytes(void* dst, const void* src, size_t bytes, cudaStream_t st);
// Sets n 32-bit words to a pattern (NaN for floats) so unwritten outputs are caught in tests.
void poison(void* p, size_t words, uint32_t pattern, cudaStream_t st);

}  // namespace cu
}  // namespace lp
