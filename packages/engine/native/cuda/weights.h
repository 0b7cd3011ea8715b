// The model's weights in device memory, uploaded once at load from the memory-mapped files (or,
// for benchmarks, generated on the device: ModelSpec::random_weights).
// Projections are fused where they share an input: q|k|v -> qkv, gate|up -> gate_up.
#pragma once
#include <vector>

#include "memory.h"

namespace lp {
namespace cu {

struct DeviceLayer {
  const void* qkv = nullptr;      // [(nh + 2 nkv) * D, H] T: rows of q, then k, then v
  const void* o = nullptr;        // [H, nh * D] T
  const void* gate_up = nullptr;  // [2 I, H] T: rows of gate, then up
  const void* down = nullptr;     // [H, I] T
  const float* attn_norm = nullptr, *ffn_norm = nullptr;  // [H] f32
  const float* qkv_bias = nullptr;                         // [(nh + 2 nkv) * D] f32, or null
  const float* q_norm = nullptr, *k_norm = nullptr;        // [D] f32 (ModelSpec::qk_norm), or null
};

class DeviceWeights {
 public:
  // Type of every matrix, the KV cache and the LoRA pool: the dtype of layer 0's q projection.
  DeviceWeights(const ModelSpec& s, cudaStream_t st);
  Ty ty() const { return ty_; }
  const void* embed() const { return embed_; }         // [vocab, H] T
  const void* lm_head() const { return lm_head_; }     // [vocab, H] T (may alias embed)
  const float* final_norm() const { return final_norm_; }  // [H]
  const float* inv_freq() const { return inv_freq_; }      // [D / 2]
  const DeviceLayer& layer(int l) const { return layers_[size_t(l)]; }
  size_t bytes() const { return bytes_; }

 private:
  void* matrix(size_t elems);
  float* vec(size_t elems);
  // Both copy on `st` (the compute stream), so every upload is ordered before the first step's
  // kernels; a host buffer of a conversion may be freed on return (pageable memory is staged).
  void upload_matrix(void* dst, const WeightRef& w, cudaStream_t st);  // converts to ty_ when needed
  void upload_vector(float* dst, const WeightRef& w, cudaStream_t st);
  void random_matrix(void* dst, size_t elems, float amp, cudaStream_t st);

  Ty ty_;
  uint64_t seed_ = 0, counter_ = 0;
  std::vector<DevBuf> bufs_;
  size_t bytes_ = 0;
  const void* embed_ = nullptr;
  const void* lm_head_ = nullptr;
  const float* final_norm_ = nullptr;
  const float* inv_freq_ = nullptr;
  std::vector<DeviceLayer> layers_;
};

}  // namespace cu
}  // namespace lp
