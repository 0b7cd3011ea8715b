#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>

#include "sample_order.h"

namespace lp {

static void log_softmax(const float* logits, int vocab, std::vector<float>& out) {
  out.resize(vocab);
  float mx = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < vocab; i++) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int i = 0; i < vocab; i++) sum += std::exp(double(logits[i]) - mx);
  const float lse = mx + float(std::log(sum));
  for (int i = 0; i < vocab; i++) out[i] = logits[i] - lse;
}

// Temperature sampling truncated by top-k, min-p and top-p in vLLM's order. Candidates are ordered
// by (logit desc, index asc); weights w = sample_weight((logit - max) / T) (max: w = 1) summed in
// double. With C the first top_k of that order (all finite logits when top_k is off) and
// Z = sum(w over C):
//   min-p keeps C up to (excluding) its first element with w < min_p;
//   top-p then keeps the shortest prefix whose mass reaches top_p * Z;
//   the draw u = uniform01(seed, draw) * (mass kept) picks the first element whose running mass
//   exceeds u.
// SampleOrder finds those positions without sorting the vocabulary (see sample_order.h).
static int32_t sample_truncated(const float* logits, int vocab, const SamplingParams& p) {
  thread_local SampleOrder order;
  order.build(logits, vocab, p.temperature);
  SampleOrder::Pos end = order.end();
  if (p.top_k > 0) end = order.first_n(p.top_k);
  const double z = order.mass(end);
  if (p.min_p > 0.f) end = order.before_weight_below(double(p.min_p), end);
  if (p.top_p < 1.f) end = order.through_mass(double(p.top_p) * z, false, end);
  const double u = uniform01(p.seed, uint64_t(p.draw)) * order.mass(end);
  return order.index_at(order.through_mass(u, true, end));
}

SampleResult sample_token(float* logits, int vocab, const SamplingParams& p, const int32_t* history, int hist_len,
                          int gen_start, const uint32_t* mask) {
  SampleResult res;
  // The raw distribution's log-probabilities, only when asked for (a pass of exp over the vocabulary).
  const bool want_lp = p.want_logprob || p.top_logprobs > 0;
  std::vector<float> raw_lp;
  if (want_lp) log_softmax(logits, vocab, raw_lp);
  const float NEG_INF = -std::numeric_limits<float>::infinity();

  // Repetition penalty (HF/vLLM convention): over prompt and generated tokens, divide positive
  // logits, multiply negative ones. Presence/frequency (OpenAI convention): generated tokens only.
  if (p.repetition_penalty != 1.f || p.presence_penalty != 0.f || p.frequency_penalty != 0.f) {
    std::unordered_map<int32_t, int> gen_counts;
    std::vector<uint8_t> seen(vocab, 0);
    for (int i = 0; i < hist_len; i++) {
      int32_t t = history[i];
      seen[t] = 1;
      if (i >= gen_start) gen_counts[t]++;
    }
    if (p.repetition_penalty != 1.f)
      for (int t = 0; t < vocab; t++)
        if (seen[t]) logits[t] = logits[t] > 0 ? logits[t] / p.repetition_penalty : logits[t] * p.repetition_penalty;
    for (auto& kv : gen_counts) logits[kv.first] -= p.frequency_penalty * float(kv.second) + p.presence_penalty;
  }
  if (mask) {
    bool any = false;
    for (int t = 0; t < vocab; t++) {
      if (!((mask[t >> 5] >> (t & 31)) & 1u)) logits[t] = NEG_INF;
      else any = true;
    }
    if (!any) throw EngineFailure("INVALID_ARGUMENT", "the allowed-token mask allows no token");
  }

  int32_t chosen = 0;
  if (p.temperature <= 0.f) {
    chosen = int32_t(std::max_element(logits, logits + vocab) - logits);  // first maximum, as torch.argmax
  } else {
    chosen = sample_truncated(logits, vocab, p);
  }
  res.token = chosen;
  res.logprob = want_lp ? raw_lp[chosen] : std::numeric_limits<float>::quiet_NaN();
  if (p.top_logprobs > 0) {
    int n = std::min(p.top_logprobs, vocab);
    std::vector<int32_t> idx(vocab);
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int32_t a, int32_t b) {
      return raw_lp[a] > raw_lp[b] || (raw_lp[a] == raw_lp[b] && a < b);
    });
    for (int i = 0; i < n; i++) {
      res.top_ids.push_back(idx[i]);
      res.top_logprobs.push_back(raw_lp[idx[i]]);
    }
  }
  return res;
}

}  // namespace lp
