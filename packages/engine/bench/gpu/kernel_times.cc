// Per-kernel times of one Llama-3-8B decode step (batch B): each projection GEMM alone and with its
// rank-16 LoRA shrink CTAs riding along (B distinct adapters), decode attention at two context
// lengths, and the LM head, each against the bytes it must read at the measured copy bandwidth.
// The step's other kernels (embedding, norms, rotary + KV append, SiLU, sampling) are the rest of
// the measured step time.
#include "kernel_times.h"

#include <cmath>
#include <cstdio>
#include <vector>

#include "memory.h"
#include <algorithm>

namespace lp {
namespace cu {

namespace {

struct Proj { const char* name; int N, K, nmod, mods[3]; };

}  // namespace

std::string kernel_times(int B, int sms, double bw, cudaStream_t st, const TimeFn& time_device, std::vector<KernelTime>& rows) {
  const int H = 4096, I = 14336, nh = 32, nkv = 8, D = 128, V = 128256, rank = 16;
  const Proj projs[] = {{"qkv", (nh + 2 * nkv) * D, H, 3, {0, 1, 2}}, {"o", H, nh * D, 1, {3, 0, 0}},
                        {"gate_up", 2 * I, H, 2, {4, 5, 0}}, {"down", H, I, 1, {6, 0, 0}}};
  const int in[7] = {H, H, H, nh * D, H, H, I}, out[7] = {nh * D, nkv * D, nkv * D, H, I, I, H};
  // One layer of a LoRA pool holding B rank-16 adapters (slot s owns pages s*16 .. s*16+15).
  LoraLayout L;
  int64_t off = 0;
  for (int m = 0; m < 7; m++) {
    L.mod_off[m] = int(off); L.in[m] = in[m]; L.out[m] = out[m]; L.in_pad[m] = (in[m] + 7) / 8 * 8;
    off += L.in_pad[m] + (out[m] + 7) / 8 * 8;
  }
  L.layer_elems = off; L.page_elems = off; L.layers = 1; L.max_rank = rank;
  DevBuf pool(size_t(B) * rank * size_t(off) * 2), ranks(size_t(B) * 7 * 4), scales(size_t(B) * 7 * 4), pages(size_t(B) * rank * 4);
  DevBuf items(size_t(B) * sizeof(LoraItem)), n_items(4), v(size_t(B) * 7 * rank * 4);
  fill_random(Ty::BF16, pool.get(), size_t(B) * rank * size_t(off), 5, 0.f, 0.02f, st);
  std::vector<int> hr(size_t(B) * 7, rank), hp(size_t(B) * rank);
  std::vector<float> hs(size_t(B) * 7, 2.f);
  std::vector<LoraItem> hi(static_cast<size_t>(B));
  for (int i = 0; i < B * rank; i++) hp[size_t(i)] = i;
  for (int b = 0; b < B; b++) hi[size_t(b)] = LoraItem{b, b, 1, 0};
  check(cudaMemcpy(ranks.get(), hr.data(), ranks.bytes(), cudaMemcpyHostToDevice), "upload");
  check(cudaMemcpy(scales.get(), hs.data(), scales.bytes(), cudaMemcpyHostToDevice), "upload");
  check(cudaMemcpy(pages.get(), hp.data(), pages.bytes(), cudaMemcpyHostToDevice), "upload");
  check(cudaMemcpy(items.get(), hi.data(), items.bytes(), cudaMemcpyHostToDevice), "upload");
  check(cudaMemcpy(n_items.get(), &B, 4, cudaMemcpyHostToDevice), "upload");
  L.pool = pool.get(); L.slot_rank = ranks.get<int>(); L.slot_scale = scales.get<float>(); L.slot_pages = pages.get<int>();

  DevBuf x(size_t(B) * I * 2), w(size_t(V) * H * 2), y(size_t(B) * V * 4), ws(size_t(64) << 20), cnt(size_t(1) << 16);
  check(cudaMemset(cnt.get(), 0, cnt.bytes()), "memset");
  fill_random(Ty::BF16, x.get(), size_t(B) * I, 6, 0.f, 1.f, st);
  fill_random(Ty::BF16, w.get(), size_t(V) * H, 7, 0.f, 0.02f, st);
  const GemmScratch sc{ws.get<float>(), ws.bytes() / 4, cnt.get<int>(), int(cnt.bytes() / 4)};
  std::string md;
  char line[256];
  auto row = [&](const std::string& name, double us, double bytes) {
    const double pct = bytes / (us * 1e-6) / bw * 100;
    rows.push_back({name, us, bytes, pct});
    std::snprintf(line, sizeof line, "| %s | %.1f | %.1f | %.0f%% |\n", name.c_str(), us, bytes / 1e6, pct);
    md += line;
  };
  for (const Proj& p : projs) {
    GemmArgs g;
    g.ty = Ty::BF16; g.x = x.get(); g.w = w.get(); g.y = y.get<float>(); g.ldy = p.N; g.M = B; g.N = p.N; g.K = p.K;
    const double wbytes = double(p.N) * p.K * 2;
    const double base = time_device([&] { gemm(g, sc, sms, st); }) * 1e3;
    row(std::string(p.name) + " GEMM", base, wbytes);
    g.lora.on = true; g.lora.lay = L; g.lora.layer = 0; g.lora.nmod = p.nmod;
    for (int i = 0; i < 3; i++) g.lora.mods[i] = p.mods[i];
    g.lora.items = items.get<LoraItem>(); g.lora.n_items = n_items.get<int>(); g.lora.max_items = B; g.lora.rank_chunks = 1;
    g.lora.v = v.get<float>();
    double abytes = 0;
    for (int i = 0; i < p.nmod; i++) abytes += double(B) * rank * in[p.mods[i]] * 2;
    const double with = time_device([&] { gemm(g, sc, sms, st); }) * 1e3;
    row(std::string(p.name) + " GEMM + shrink (" + std::to_string(B) + " x rank 16)", with, wbytes + abytes);
  }
  {
    GemmArgs g;
    g.ty = Ty::BF16; g.x = x.get(); g.w = w.get(); g.y = y.get<float>(); g.ldy = V; g.M = B; g.N = V; g.K = H;
    row("LM head GEMM", time_device([&] { gemm(g, sc, sms, st); }) * 1e3, double(V) * H * 2);
  }
  // Decode attention (one layer's cache, 16-token blocks), B tokens at context ctx.
  for (int ctx : {512, 2048}) {
    const int bps = (ctx + 15) / 16;
    DevBuf kv(size_t(B) * bps * 2 * nkv * 16 * D * 2), q(size_t(B) * nh * D * 4), o(size_t(B) * nh * D * 2);
    fill_random(Ty::BF16, kv.get(), kv.bytes() / 2, 8, 0.f, 1.f, st);
    fill_random(Ty::F32, q.get(), q.bytes() / 4, 9, 0.f, 1.f, st);
    std::vector<int> pos(static_cast<size_t>(B), ctx - 1), seg(static_cast<size_t>(B)), boff(static_cast<size_t>(B) + 1), table(size_t(B) * bps);
    for (int b = 0; b < B; b++) { seg[size_t(b)] = b; boff[size_t(b)] = b * bps; }
    boff[size_t(B)] = B * bps;
    for (int i = 0; i < B * bps; i++) table[size_t(i)] = i;
    DevBuf dpos(pos.size() * 4), dseg(seg.size() * 4), dboff(boff.size() * 4), dtable(table.size() * 4);
    check(cudaMemcpy(dpos.get(), pos.data(), dpos.bytes(), cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(dseg.get(), seg.data(), dseg.bytes(), cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(dboff.get(), boff.data(), dboff.bytes(), cudaMemcpyHostToDevice), "upload");
    check(cudaMemcpy(dtable.get(), table.data(), dtable.bytes(), cudaMemcpyHostToDevice), "upload");
    AttnArgs a;
    a.ty = Ty::BF16; a.q = q.get<float>(); a.kv = kv.get(); a.out = o.get();
    a.positions = dpos.get<int>(); a.tok_seg = dseg.get<int>(); a.seg_block_off = dboff.get<int>(); a.block_table = dtable.get<int>();
    a.nh = nh; a.nkv = nkv; a.D = D; a.layer = 0; a.layers = 1; a.block_size = 16; a.scale = 1.f / std::sqrt(float(D));
    a.n_tok = B; a.splits = attn_decode_splits(B, nh, nkv, sms);
    const AttnNeeds need = attn_decode_needs(B, nh, nkv, D, a.splits);
    DevBuf aws(std::max<size_t>(4, need.ws_floats * 4)), acnt(std::max<size_t>(4, size_t(need.counters) * 4));
    check(cudaMemset(acnt.get(), 0, acnt.bytes()), "memset");
    a.ws = aws.get<float>(); a.counters = acnt.get<int>();
    row("decode attention, context " + std::to_string(ctx), time_device([&] { attention_decode(a, st); }) * 1e3, double(B) * ctx * 2 * nkv * D * 2);
  }
  check(cudaStreamSynchronize(st), "kernel times");
  return md;
}

}  // namespace cu
}  // namespace lp
