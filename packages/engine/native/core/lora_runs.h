// The "same-adapter runs" both backends apply LoRA over: each token of a step gets its segment's
// adapter slot, and consecutive tokens with one slot form runs of at most `max_tokens` (a CPU
// matmul tile, a CUDA LoRA item). Runs of the base model (slot -1) are not reported.
#pragma once
#include <cstdint>
#include <vector>

#include "backend.h"

namespace lp {

// token_slot[t] = the adapter slot of the segment token t belongs to; token_seg[t] its segment
// (token_seg may be null).
inline void token_slots(const StepInput& in, std::vector<int32_t>& token_slot, std::vector<int32_t>* token_seg) {
  const size_t T = in.tokens.size(), S = in.seg_slot.size();
  token_slot.resize(T);
  if (token_seg) token_seg->resize(T);
  for (size_t sg = 0; sg < S; sg++)
    for (int32_t t = in.seg_offsets[sg]; t < in.seg_offsets[sg + 1]; t++) {
      token_slot[size_t(t)] = in.seg_slot[sg];
      if (token_seg) (*token_seg)[size_t(t)] = int32_t(sg);
    }
}

// Calls emit(t0, t1, slot) for every run [t0, t1) of adapted tokens, in token order.
template <typename Emit>
void for_each_lora_run(const int32_t* token_slot, int64_t T, int64_t max_tokens, Emit&& emit) {
  for (int64_t t = 0; t < T;) {
    const int32_t slot = token_slot[t];
    int64_t e = t + 1;
    while (e < T && token_slot[e] == slot && e - t < max_tokens) e++;
    if (slot >= 0) emit(t, e, int(slot));
    t = e;
  }
}

}  // namespace lp
