// The CPU backend: a Llama-family forward pass over one mixed batch (prefill chunks and decode
// tokens of many sequences, each with its own adapter or none), read top to bottom.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <thread>

#include "../core/backend.h"
#include "../core/lora_runs.h"
#include "kernels.h"
#include "lora_pool.h"
#include "sampler.h"
#include "thread_pool.h"

namespace lp {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const ModelSpec& spec)
      : s_(spec),
        pool_(spec.threads > 0 ? spec.threads : int(std::max(1u, std::thread::hardware_concurrency()))),
        lora_(spec),
        kv_block_floats_(size_t(spec.layers) * 2 * spec.kv_heads * spec.block_size * spec.head_dim) {
    kv_.assign(size_t(spec.kv_blocks) * kv_block_floats_, 0.f);
    // q/k/v biases (Qwen2) widened once, [layers][3][out].
    bias_.resize(size_t(spec.layers));
    for (int l = 0; l < spec.layers; l++) {
      const LayerWeights& L = spec.layer[size_t(l)];
      const WeightRef* src[3] = {&L.q_bias, &L.k_bias, &L.v_bias};
      for (int i = 0; i < 3; i++)
        if (src[i]->data) {
          bias_[size_t(l)][i].resize(size_t(src[i]->rows * src[i]->cols));
          load_vector(*src[i], bias_[size_t(l)][i].data());
        }
    }
  }

  std::string name() const override { return "cpu"; }
  size_t bytes_allocated() const override { return kv_.size() * sizeof(float) + lora_.bytes() + lora_.dora_bytes(); }
  void write_adapter(int slot, const std::vector<int>& pages, const AdapterSpec& a) override { lora_.write(slot, pages, a); }
  void clear_slot(int slot) override { lora_.clear(slot); }
  size_t lora_page_bytes() const override { return lora_.page_bytes(); }

  void step(const StepInput& in, StepOutput& out, const std::function<void()>& await_masks) override;

 private:
  // K or V vector of (block, layer, kv head, slot in block): [head_dim]
  float* kv_at(int block, int layer, int kind, int kvh, int slot) {
    return kv_.data() + size_t(block) * kv_block_floats_ +
           ((size_t(layer) * 2 + kind) * s_.kv_heads + kvh) * size_t(s_.block_size) * s_.head_dim + size_t(slot) * s_.head_dim;
  }
  void project(int layer, int m, const float* x, int64_t T, float* y);
  void attention(int layer, const StepInput& in, const float* q, float* att, int64_t T);

  ModelSpec s_;
  ThreadPool pool_;
  LoraPool lora_;
  size_t kv_block_floats_;
  std::vector<float> kv_;                   // [kv_blocks, layers, 2, kv_heads, block_size, head_dim]
  std::vector<int32_t> token_slot_, token_seg_;
  std::vector<float> x_, h_, q_, k_, v_, att_, g_, u_, cos_, sin_, normed_, logits_;
  std::vector<std::array<std::vector<float>, 3>> bias_;  // [layers][q, k, v] -> [out] or empty
};

// y = x W^T + LoRA expand of the shrink results lora_ holds for (layer, m) (+ bias), with expand and
// bias applied per output-row block right after the block is computed.
void CpuBackend::project(int layer, int m, const float* x, int64_t T, float* y) {
  const WeightRef& W = s_.layer[size_t(layer)].proj[m];
  const int64_t out = W.rows;
  static const std::vector<float> kNoBias;
  const std::vector<float>& b = m <= kV ? bias_[size_t(layer)][size_t(m)] : kNoBias;
  const bool lora = lora_.active(layer, m);
  if (b.empty() && !lora) return matmul(pool_, x, T, W, y);
  const RowEpilogue epilogue = [&](int64_t r0, int64_t r1) {
    // Expand before bias: a DoRA row scales W x + delta, and the bias stays out of the scale.
    if (lora) lora_.expand_rows(layer, m, y, r0, r1);
    if (!b.empty())
      for (int64_t t = 0; t < T; t++)
        for (int64_t o = r0; o < r1; o++) y[t * out + o] += b[size_t(o)];
  };
  matmul(pool_, x, T, W, y, &epilogue);
}

// Causal attention of every step token over its sequence's paged KV cache (which already holds
// this step's keys and values). One work item per (token, query head).
void CpuBackend::attention(int layer, const StepInput& in, const float* q, float* att, int64_t T) {
  const int nh = s_.heads, hd = s_.head_dim, group = s_.heads / s_.kv_heads, bs = s_.block_size;
  const float scale = 1.0f / std::sqrt(float(hd));
  pool_.parallel_for(T * nh, [&](int64_t item) {
    const int64_t t = item / nh;
    const int h = int(item % nh), kvh = h / group;
    const int seg = token_seg_[size_t(t)];
    const int32_t* table = in.block_table.data() + in.block_offsets[size_t(seg)];
    const int pos = in.positions[size_t(t)];
    const int first = s_.sliding_window > 0 ? std::max(0, pos - s_.sliding_window + 1) : 0;
    const float* qh = q + (t * nh + h) * hd;
    thread_local std::vector<float> scores;
    scores.resize(size_t(pos + 1));
    float mx = -INFINITY;
    for (int j = first; j <= pos; j++) {
      float sc = dot_f32(qh, kv_at(table[j / bs], layer, 0, kvh, j % bs), hd) * scale;
      scores[size_t(j)] = sc;
      mx = std::max(mx, sc);
    }
    float sum = 0.f;
    for (int j = first; j <= pos; j++) sum += scores[size_t(j)] = std::exp(scores[size_t(j)] - mx);
    float* o = att + (t * nh + h) * hd;
    std::fill(o, o + hd, 0.f);
    const float inv = 1.0f / sum;
    for (int j = first; j <= pos; j++) axpy_f32(scores[size_t(j)] * inv, kv_at(table[j / bs], layer, 1, kvh, j % bs), o, hd);
  }, T * nh * hd * 2 * (in.positions[size_t(T - 1)] + 1));
}

void CpuBackend::step(const StepInput& in, StepOutput& out, const std::function<void()>& await_masks) {
  const int64_t T = int64_t(in.tokens.size()), S = int64_t(in.seg_slot.size());
  const int H = s_.hidden, I = s_.intermediate, nh = s_.heads, nkv = s_.kv_heads, hd = s_.head_dim, half = hd / 2;
  const int qdim = nh * hd, kvdim = nkv * hd;

  token_slots(in, token_slot_, &token_seg_);

  x_.resize(size_t(T) * H);   // residual stream [T, H]
  h_.resize(size_t(T) * H);   // normed input [T, H]
  q_.resize(size_t(T) * qdim);   // [T, heads, head_dim]
  k_.resize(size_t(T) * kvdim);  // [T, kv_heads, head_dim]
  v_.resize(size_t(T) * kvdim);  // [T, kv_heads, head_dim]
  att_.resize(size_t(T) * qdim); // attention output [T, heads * head_dim]
  g_.resize(size_t(T) * I);      // gate, then silu(gate) * up [T, I]
  u_.resize(size_t(T) * I);      // up [T, I]
  cos_.resize(size_t(T) * half); // rotary tables [T, head_dim / 2]
  sin_.resize(size_t(T) * half);

  lora_.begin_step(token_slot_.data(), T);
  for (int64_t t = 0; t < T; t++) {
    embed_row(s_.embed, in.tokens[size_t(t)], x_.data() + t * H);
    for (int i = 0; i < half; i++) {
      const float ang = float(in.positions[size_t(t)]) * s_.inv_freq[size_t(i)];
      cos_[size_t(t * half + i)] = std::cos(ang);
      sin_[size_t(t * half + i)] = std::sin(ang);
    }
  }

  for (int l = 0; l < s_.layers; l++) {
    const LayerWeights& L = s_.layer[size_t(l)];
    // --- attention block ---
    rmsnorm(pool_, x_.data(), L.attn_norm, h_.data(), T, H, s_.rms_eps);
    lora_.shrink(pool_, l, {kQ, kK, kV}, h_.data(), T);
    project(l, kQ, h_.data(), T, q_.data());
    project(l, kK, h_.data(), T, k_.data());
    project(l, kV, h_.data(), T, v_.data());
    if (s_.qk_norm) {  // Qwen3: RMSNorm over each head's query and key (after bias and LoRA), before rotary
      rmsnorm(pool_, q_.data(), L.q_norm, q_.data(), T * nh, hd, s_.rms_eps);
      rmsnorm(pool_, k_.data(), L.k_norm, k_.data(), T * nkv, hd, s_.rms_eps);
    }
    // Rotary embedding (rotate-half convention of HF Llama), then append K and V to the paged cache.
    pool_.parallel_chunks(T, [&](int, int64_t b, int64_t e) {
      for (int64_t t = b; t < e; t++) {
        const float* c = cos_.data() + t * half;
        const float* sn = sin_.data() + t * half;
        auto rotate = [&](float* vec) {
          for (int i = 0; i < half; i++) {
            const float x1 = vec[i], x2 = vec[i + half];
            vec[i] = x1 * c[i] - x2 * sn[i];
            vec[i + half] = x2 * c[i] + x1 * sn[i];
          }
        };
        for (int h = 0; h < nh; h++) rotate(q_.data() + (t * nh + h) * hd);
        for (int h = 0; h < nkv; h++) rotate(k_.data() + (t * nkv + h) * hd);
        const int seg = token_seg_[size_t(t)], pos = in.positions[size_t(t)];
        const int block = in.block_table[size_t(in.block_offsets[size_t(seg)] + pos / s_.block_size)];
        for (int h = 0; h < nkv; h++) {
          std::memcpy(kv_at(block, l, 0, h, pos % s_.block_size), k_.data() + (t * nkv + h) * hd, sizeof(float) * hd);
          std::memcpy(kv_at(block, l, 1, h, pos % s_.block_size), v_.data() + (t * nkv + h) * hd, sizeof(float) * hd);
        }
      }
    }, T * (nh + nkv) * hd * 4);
    attention(l, in, q_.data(), att_.data(), T);
    lora_.shrink(pool_, l, {kO}, att_.data(), T);
    project(l, kO, att_.data(), T, h_.data());  // h_ reused as the o_proj output [T, H]
    for (size_t i = 0; i < size_t(T) * H; i++) x_[i] += h_[i];
    // --- MLP block ---
    rmsnorm(pool_, x_.data(), L.ffn_norm, h_.data(), T, H, s_.rms_eps);
    lora_.shrink(pool_, l, {kGate, kUp}, h_.data(), T);
    project(l, kGate, h_.data(), T, g_.data());
    project(l, kUp, h_.data(), T, u_.data());
    pool_.parallel_chunks(T, [&](int, int64_t b, int64_t e) {
      silu_mul(g_.data() + b * I, u_.data() + b * I, (e - b) * I);
    }, T * I * 8);
    lora_.shrink(pool_, l, {kDown}, g_.data(), T);
    project(l, kDown, g_.data(), T, h_.data());
    for (size_t i = 0; i < size_t(T) * H; i++) x_[i] += h_[i];
  }

  // Rows that need logits: every position of all-logits segments, the last one of sampling segments.
  std::vector<int32_t> rows;
  std::vector<int64_t> sample_row(size_t(S), -1), first_all_row(size_t(S), -1);
  for (int64_t sg = 0; sg < S; sg++) {
    const int32_t b = in.seg_offsets[size_t(sg)], e = in.seg_offsets[size_t(sg + 1)];
    if (in.seg_all_logits[size_t(sg)]) {
      first_all_row[size_t(sg)] = int64_t(rows.size());
      for (int32_t t = b; t < e; t++) rows.push_back(t);
      if (in.seg_sample[size_t(sg)]) sample_row[size_t(sg)] = int64_t(rows.size()) - 1;
    } else if (in.seg_sample[size_t(sg)]) {
      sample_row[size_t(sg)] = int64_t(rows.size());
      rows.push_back(e - 1);
    }
  }
  const int64_t R = int64_t(rows.size()), V = s_.vocab;
  normed_.resize(size_t(R) * H);  // [R, H]
  logits_.resize(size_t(R) * V);  // [R, V]
  float* normed = normed_.data();
  float* logits = logits_.data();
  for (int64_t r = 0; r < R; r++) std::memcpy(normed + r * H, x_.data() + int64_t(rows[size_t(r)]) * H, sizeof(float) * H);
  rmsnorm(pool_, normed, s_.final_norm, normed, R, H, s_.rms_eps);
  matmul(pool_, normed, R, s_.lm_head, logits);

  out.logits.clear();
  for (int64_t sg = 0; sg < S; sg++)
    if (first_all_row[size_t(sg)] >= 0) {
      const int64_t n = in.seg_offsets[size_t(sg + 1)] - in.seg_offsets[size_t(sg)];
      const float* src = logits + first_all_row[size_t(sg)] * V;
      out.logits.insert(out.logits.end(), src, src + n * V);
    }

  // Deferred masks (JSON mode): the caller computed them while the layers above ran.
  if (await_masks) await_masks();
  const int tn = in.max_top_logprobs;
  out.token.assign(size_t(S), -1);
  out.logprob.assign(size_t(S), 0.f);
  out.top_ids.assign(size_t(S * tn), -1);
  out.top_logprobs.assign(size_t(S * tn), 0.f);
  const size_t mask_words = size_t((V + 31) / 32);
  std::vector<std::string> errors(static_cast<size_t>(S));
  pool_.parallel_for(S, [&](int64_t sg) {
    if (sample_row[size_t(sg)] < 0) return;
    try {
      const int32_t hb = in.hist_offsets[size_t(sg)], he = in.hist_offsets[size_t(sg + 1)];
      const int mi = in.seg_mask[size_t(sg)];
      SampleResult r = sample_token(logits + sample_row[size_t(sg)] * V, int(V), in.sampling[size_t(sg)],
                                    in.hist_tokens.data() + hb, he - hb, in.hist_generated_start[size_t(sg)],
                                    mi >= 0 ? in.masks.data() + size_t(mi) * mask_words : nullptr);
      out.token[size_t(sg)] = r.token;
      out.logprob[size_t(sg)] = r.logprob;
      for (size_t i = 0; i < r.top_ids.size() && int(i) < tn; i++) {
        out.top_ids[size_t(sg * tn) + i] = r.top_ids[i];
        out.top_logprobs[size_t(sg * tn) + i] = r.top_logprobs[i];
      }
    } catch (const EngineFailure& e) {
      errors[size_t(sg)] = e.message;
    }
  }, S * V * 4);
  for (auto& e : errors)
    if (!e.empty()) throw EngineFailure("INVALID_ARGUMENT", e);
}

std::unique_ptr<Backend> make_cpu_backend(const ModelSpec& spec) { return std::make_unique<CpuBackend>(spec); }

}  // namespace lp
