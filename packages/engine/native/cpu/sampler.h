// Token sampling for one sequence from one row of logits: penalties, allowed-token mask,
// temperature, top-k, top-p, min-p, and a counter-based RNG so that a seed gives the same tokens
// whatever else shares the batch. Shared by every backend that samples on the host.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/backend.h"
#include "../core/rng.h"  // uniform01: the draw's uniform number

namespace lp {

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.f;
  std::vector<int32_t> top_ids;
  std::vector<float> top_logprobs;
};

// logits: [vocab], modified in place. history: prompt + generated tokens; generated start at gen_start.
// mask: ceil(vocab/32) words or nullptr. Log-probabilities are those of the model's raw distribution.
SampleResult sample_token(float* logits, int vocab, const SamplingParams& p, const int32_t* history, int hist_len,
                          int gen_start, const uint32_t* mask);

}  // namespace lp
