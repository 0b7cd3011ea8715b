#include "weights.h"

#include <cmath>
#include <cstring>

namespace lp {
namespace cu {

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear the sticky-free error state so later calls are not misreported
  throw EngineFailure("CUDA", std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

void convert_host(const void* src, DType from, void* dst, Ty to, size_t n) {
  if (ty_of(from) == to) {
    std::memcpy(dst, src, n * ty_size(to));
    return;
  }
  auto load = [&](size_t i) -> float {
    if (from == DType::F32) return static_cast<const float*>(src)[i];
    return half_bits_to_f32(static_cast<const uint16_t*>(src)[i], from == DType::BF16);
  };
  for (size_t i = 0; i < n; i++) {
    const float v = load(i);
    if (to == Ty::F32) static_cast<float*>(dst)[i] = v;
    else static_cast<uint16_t*>(dst)[i] = to == Ty::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
  }
}

void* DeviceWeights::matrix(size_t elems) {
  bufs_.emplace_back(elems * ty_size(ty_));
  bytes_ += bufs_.back().bytes();
  return bufs_.back().get();
}

float* DeviceWeights::vec(size_t elems) {
  bufs_.emplace_back(elems * sizeof(float));
  bytes_ += bufs_.back().bytes();
  return bufs_.back().get<float>();
}

void DeviceWeights::upload_matrix(void* dst, const WeightRef& w, cudaStream_t st) {
  const size_t n = size_t(w.rows) * size_t(w.cols);
  if (ty_of(w.dtype) == ty_) {
    check(cudaMemcpyAsync(dst, w.data, n * ty_size(ty_), cudaMemcpyHostToDevice, st), "weight upload");
    return;
  }
  std::vector<uint8_t> tmp(n * ty_size(ty_));  // a weight in another dtype than layer 0's q
  convert_host(w.data, w.dtype, tmp.data(), ty_, n);
  check(cudaMemcpyAsync(dst, tmp.data(), tmp.size(), cudaMemcpyHostToDevice, st), "weight upload");
}

void DeviceWeights::upload_vector(float* dst, const WeightRef& w, cudaStream_t st) {
  const size_t n = size_t(w.rows) * size_t(w.cols);
  std::vector<float> tmp(n);
  convert_host(w.data, w.dtype, tmp.data(), Ty::F32, n);
  check(cudaMemcpyAsync(dst, tmp.data(), n * sizeof(float), cudaMemcpyHostToDevice, st), "weight upload");
}

void DeviceWeights::random_matrix(void* dst, size_t elems, float amp, cudaStream_t st) {
  fill_random(ty_, dst, elems, seed_ ^ (0x9e3779b97f4a7c15ULL * ++counter_), 0.f, amp, st);
}

DeviceWeights::DeviceWeights(const ModelSpec& s, cudaStream_t st) : ty_(ty_of(s.layer.at(0).proj[kQ].dtype)), seed_(s.random_seed) {
  const size_t H = size_t(s.hidden), I = size_t(s.intermediate), D = size_t(s.head_dim);
  const size_t QD = size_t(s.heads) * D, KVD = size_t(s.kv_heads) * D, QKV = QD + 2 * KVD, V = size_t(s.vocab);
  const bool rnd = s.random_weights;
  // Random weights: matrices uniform with std 0.02 (amplitude 0.02 * sqrt(3)), norms near 1.
  const float amp = 0.02f * std::sqrt(3.f);
  auto norm = [&](const WeightRef& w, size_t n) -> float* {
    float* p = vec(n);
    if (rnd) fill_random(Ty::F32, p, n, seed_ ^ (0x9e3779b97f4a7c15ULL * ++counter_), 1.f, 0.1f, st);
    else upload_vector(p, w, st);
    return p;
  };
  void* e = matrix(V * H);
  if (rnd) random_matrix(e, V * H, amp, st);
  else upload_matrix(e, s.embed, st);
  embed_ = e;
  if (!rnd && s.lm_head.data == s.embed.data && s.lm_head.dtype == s.embed.dtype) {
    lm_head_ = embed_;  // tied embeddings share one copy
  } else {
    void* lm = matrix(V * H);
    if (rnd) random_matrix(lm, V * H, amp, st);
    else upload_matrix(lm, s.lm_head, st);
    lm_head_ = lm;
  }
  final_norm_ = norm(s.final_norm, H);
  float* inv = vec(s.inv_freq.size());
  check(cudaMemcpyAsync(inv, s.inv_freq.data(), s.inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice, st), "inv_freq upload");
  inv_freq_ = inv;

  layers_.resize(size_t(s.layers));
  const size_t es = ty_size(ty_);
  for (int l = 0; l < s.layers; l++) {
    const LayerWeights& L = s.layer[size_t(l)];
    DeviceLayer& d = layers_[size_t(l)];
    char* qkv = static_cast<char*>(matrix(QKV * H));
    char* gu = static_cast<char*>(matrix(2 * I * H));
    void* o = matrix(H * QD);
    void* down = matrix(H * I);
    if (rnd) {
      random_matrix(qkv, QKV * H, amp, st);
      random_matrix(gu, 2 * I * H, amp, st);
      random_matrix(o, H * QD, amp, st);
      random_matrix(down, H * I, amp, st);
    } else {
      upload_matrix(qkv, L.proj[kQ], st);
      upload_matrix(qkv + QD * H * es, L.proj[kK], st);
      upload_matrix(qkv + (QD + KVD) * H * es, L.proj[kV], st);
      upload_matrix(gu, L.proj[kGate], st);
      upload_matrix(gu + I * H * es, L.proj[kUp], st);
      upload_matrix(o, L.proj[kO], st);
      upload_matrix(down, L.proj[kDown], st);
    }
    d.qkv = qkv; d.gate_up = gu; d.o = o; d.down = down;
    d.attn_norm = norm(L.attn_norm, H);
    d.ffn_norm = norm(L.ffn_norm, H);
    if (s.qk_norm) {
      d.q_norm = norm(L.q_norm, D);
      d.k_norm = norm(L.k_norm, D);
    }
    if (!rnd && L.q_bias.data) {
      float* b = vec(QKV);
      upload_vector(b, L.q_bias, st);
      upload_vector(b + QD, L.k_bias, st);
      upload_vector(b + QD + KVD, L.v_bias, st);
      d.qkv_bias = b;
    }
  }
  check(cudaStreamSynchronize(st), "weight initialisation");
}

}  // namespace cu
}  // namespace lp
