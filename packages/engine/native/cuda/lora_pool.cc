#include "lora_pool.h"

#include <cstring>

namespace lp {
namespace cu {

static int pad8(int n) { return (n + 7) / 8 * 8; }

DeviceLora::DeviceLora(const ModelSpec& s, Ty ty)
    : ty_(ty), layers_(s.layers), max_adapters_(s.max_adapters), max_rank_(s.max_rank), pages_count_(s.lora_pages),
      slot_rank_(size_t(s.max_adapters), 0), slot_dora_(size_t(s.max_adapters), 0) {
  int64_t per_layer = 0;
  for (int m = 0; m < kMods; m++) {
    lay_.in[m] = module_in(s, m);
    lay_.out[m] = module_out(s, m);
    lay_.in_pad[m] = pad8(lay_.in[m]);
    lay_.mod_off[m] = int(per_layer);
    per_layer += pad8(lay_.in[m]) + pad8(lay_.out[m]);
  }
  lay_.layer_elems = per_layer;
  lay_.page_elems = per_layer * s.layers;
  lay_.layers = s.layers;
  lay_.max_rank = s.max_rank;
  for (int m = 0; m < kMods; m++) {
    lay_.dora_mod_off[m] = int(lay_.dora_layer_elems);
    lay_.dora_layer_elems += lay_.out[m];
  }
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "adapter stream");
  for (auto& e : done_) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "adapter event");
  if (!enabled()) return;
  pool_.alloc(size_t(pages_count_) * size_t(lay_.page_elems) * ty_size(ty_));
  rank_.alloc(size_t(max_adapters_) * layers_ * kMods * sizeof(int));
  scale_.alloc(size_t(max_adapters_) * layers_ * kMods * sizeof(float));
  pages_.alloc(size_t(max_adapters_) * max_rank_ * sizeof(int));
  dora_.alloc(size_t(max_adapters_) * layers_ * size_t(lay_.dora_layer_elems) * sizeof(float));
  dora_on_.alloc(size_t(max_adapters_) * layers_ * kMods * sizeof(int));
  check(cudaMemsetAsync(dora_on_.get(), 0, dora_on_.bytes(), stream_), "lora pool init");
  check(cudaMemsetAsync(pool_.get(), 0, pool_.bytes(), stream_), "lora pool init");
  check(cudaMemsetAsync(rank_.get(), 0, rank_.bytes(), stream_), "lora pool init");
  check(cudaMemsetAsync(scale_.get(), 0, scale_.bytes(), stream_), "lora pool init");
  check(cudaMemsetAsync(pages_.get(), 0, pages_.bytes(), stream_), "lora pool init");
  check(cudaStreamSynchronize(stream_), "lora pool init");
  // Pinned staging allocated up front, so the first adapter load does no allocation mid-serving.
  const size_t page_bytes = size_t(lay_.page_elems) * ty_size(ty_);
  staging_[0].alloc(page_bytes);
  staging_[1].alloc(page_bytes);
  tables_.alloc(size_t(layers_) * kMods * (sizeof(int) + sizeof(float)) + size_t(max_rank_) * sizeof(int));
  lay_.pool = pool_.get();
  lay_.slot_rank = rank_.get<int>();
  lay_.slot_scale = scale_.get<float>();
  lay_.slot_pages = pages_.get<int>();
  lay_.slot_dora = dora_.get<float>();
  lay_.slot_dora_on = dora_on_.get<int>();
}

DeviceLora::~DeviceLora() {
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& e : done_)
    if (e) cudaEventDestroy(e);
  if (stream_) cudaStreamDestroy(stream_);
}

int DeviceLora::slot_rank(int slot) const {
  std::lock_guard<std::mutex> lock(meta_mu_);
  return slot_rank_[size_t(slot)];
}

bool DeviceLora::slot_dora(int slot) const {
  std::lock_guard<std::mutex> lock(meta_mu_);
  return slot_dora_[size_t(slot)] != 0;
}

void DeviceLora::clear(int slot) {
  // The device tables keep stale values: no step can name an unbound slot (the binding checks).
  std::lock_guard<std::mutex> lock(meta_mu_);
  slot_rank_[size_t(slot)] = 0;
  slot_dora_[size_t(slot)] = 0;
}

void DeviceLora::write(int slot, const std::vector<int>& pages, const AdapterSpec& a) {
  std::lock_guard<std::mutex> lock(write_mu_);  // not meta_mu_: steps keep planning meanwhile
  if (!enabled()) throw EngineFailure("ADAPTER_POOL_FULL", "the LoRA pool has no pages");
  const size_t es = ty_size(ty_), page_bytes = size_t(lay_.page_elems) * es;
  const size_t nt = size_t(layers_) * kMods;
  auto store = [&](char* base, int64_t idx, float v) {
    if (ty_ == Ty::F32) reinterpret_cast<float*>(base)[idx] = v;
    else reinterpret_cast<uint16_t*>(base)[idx] = ty_ == Ty::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
  };
  for (size_t j = 0; j < pages.size(); j++) {
    const int b = int(j & 1);
    check(cudaEventSynchronize(done_[b]), "adapter staging");  // the copy that last read this buffer
    char* buf = staging_[b].get<char>();
    for (int l = 0; l < layers_; l++)
      for (int m = 0; m < kMods; m++) {
        const size_t idx = size_t(l) * kMods + m;
        const int r = a.rank[idx];
        if (int(j) >= r) continue;  // this module's slot in the page stays unused (never read)
        const int64_t off = int64_t(l) * lay_.layer_elems + lay_.mod_off[m];
        const int in = lay_.in[m], out = lay_.out[m];
        convert_host(a.a[idx].data() + j * size_t(in), DType::F32, buf + off * es, ty_, size_t(in));  // A row j
        const float* B = a.b[idx].data();                                                           // [out, r]
        for (int o = 0; o < out; o++) store(buf, off + lay_.in_pad[m] + o, B[size_t(o) * r + j]);   // B column j
      }
    check(cudaMemcpyAsync(static_cast<char*>(pool_.get()) + size_t(pages[j]) * page_bytes, buf, page_bytes, cudaMemcpyHostToDevice, stream_),
          "adapter upload");
    check(cudaEventRecord(done_[b], stream_), "adapter upload");
  }
  int* rk = tables_.get<int>();
  float* sc = reinterpret_cast<float*>(rk + nt);
  int* pg = reinterpret_cast<int*>(sc + nt);
  for (size_t i = 0; i < nt; i++) {
    rk[i] = a.rank[i];
    sc[i] = a.scale[i];
  }
  for (int j = 0; j < max_rank_; j++) pg[j] = j < int(pages.size()) ? pages[size_t(j)] : 0;
  // DoRA row scales and flags (pageable copies, ordered on the stream; synchronised below).
  std::vector<int> dora_on(nt, 0);
  std::vector<float> dora(size_t(layers_) * size_t(lay_.dora_layer_elems), 0.f);
  bool any_dora = false;
  for (size_t i = 0; i < nt && i < a.dora_scale.size(); i++) {
    const std::vector<float>& g = a.dora_scale[i];
    if (g.empty()) continue;
    const int l = int(i / kMods), m = int(i % kMods);
    dora_on[i] = 1;
    any_dora = true;
    std::memcpy(dora.data() + size_t(l) * size_t(lay_.dora_layer_elems) + size_t(lay_.dora_mod_off[m]), g.data(), g.size() * sizeof(float));
  }
  check(cudaMemcpyAsync(dora_on_.get<int>() + size_t(slot) * nt, dora_on.data(), nt * sizeof(int), cudaMemcpyHostToDevice, stream_), "adapter upload");
  if (any_dora)
    check(cudaMemcpyAsync(dora_.get<float>() + size_t(slot) * dora.size(), dora.data(), dora.size() * sizeof(float), cudaMemcpyHostToDevice, stream_),
          "adapter upload");
  check(cudaMemcpyAsync(rank_.get<int>() + size_t(slot) * nt, rk, nt * sizeof(int), cudaMemcpyHostToDevice, stream_), "adapter upload");
  check(cudaMemcpyAsync(scale_.get<float>() + size_t(slot) * nt, sc, nt * sizeof(float), cudaMemcpyHostToDevice, stream_), "adapter upload");
  check(cudaMemcpyAsync(pages_.get<int>() + size_t(slot) * max_rank_, pg, size_t(max_rank_) * sizeof(int), cudaMemcpyHostToDevice, stream_),
        "adapter upload");
  check(cudaStreamSynchronize(stream_), "adapter upload");
  std::lock_guard<std::mutex> meta(meta_mu_);
  slot_rank_[size_t(slot)] = a.max_rank;
  slot_dora_[size_t(slot)] = any_dora ? 1 : 0;
}

}  // namespace cu
}  // namespace lp
