// Every CUDA kernel against the CPU backend's own code (native/cpu: matmul, rmsnorm, silu_mul,
// LoraPool shrink/expand, sample_token) or, where the CPU backend has no separate function (rotary +
// cache append, paged attention), against a float64 transcription of cpu_backend.cc.
#include <algorithm>
#include <cstdarg>
#include <cstdlib>
#include <numeric>

#include "../native/cpu/kernels.h"
#include "../native/cpu/lora_pool.h"
#include "../native/cpu/sampler.h"
#include "lora_pool.h"
#include "test_util.h"

namespace lpt {

using namespace lp;
using namespace lp::cu;

namespace {

ThreadPool& pool() {
  static ThreadPool p(4);
  return p;
}
std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char b[256];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(b, sizeof b, f, ap);
  va_end(ap);
  return b;
}
int sms() {
  int dev = 0, n = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev);
  return n;
}

// Scratch big enough for any GEMM/attention split in these tests.
struct Scratch {
  DevBuf ws{size_t(64) << 20}, cnt{size_t(1) << 20}, aws{size_t(64) << 20}, acnt{size_t(1) << 20};
  Scratch() {
    check(cudaMemset(cnt.get(), 0, cnt.bytes()), "memset");
    check(cudaMemset(acnt.get(), 0, acnt.bytes()), "memset");
  }
  GemmScratch g() { return GemmScratch{ws.get<float>(), ws.bytes() / 4, cnt.get<int>(), int(cnt.bytes() / 4)}; }
};
Scratch& scratch() {
  static Scratch s;
  return s;
}

void test_gemm(Report& rep, Rng& r) {
  const int shapes[][3] = {{1, 64, 64}, {3, 172, 64}, {8, 256, 512}, {13, 500, 256}, {16, 64, 172}, {17, 300, 256}, {40, 1024, 1024},
                           {64, 256, 4096}, {65, 512, 512}, {200, 384, 256}, {300, 1000, 520}, {1, 4096, 4096}, {129, 4096, 1024}};
  for (Ty ty : {Ty::F32, Ty::BF16, Ty::F16})
    for (auto& sh : shapes) {
      const int M = sh[0], N = sh[1], K = sh[2];
      if (ty == Ty::F32 && M * N * K > 200000000) continue;
      for (bool acc : {false, true}) {
        auto x = randn(r, size_t(M) * K, 1.f), w = randn(r, size_t(N) * K, 0.05f), y0 = randn(r, size_t(M) * N, 1.f);
        round_all(ty, x);
        round_all(ty, w);
        const auto wb = to_bytes(ty, w);
        std::vector<float> ref(size_t(M) * N);
        WeightRef W{wb.data(), dtype_of(ty), N, K};
        matmul(pool(), x.data(), M, W, ref.data());
        if (acc)
          for (size_t i = 0; i < ref.size(); i++) ref[i] += y0[i];
        DevBuf dx = upload(ty, x), dw = upload_bytes(wb.data(), wb.size()), dy = upload(Ty::F32, y0);
        if (!acc) poison(dy, Ty::F32);
        GemmArgs a;
        a.ty = ty; a.x = dx.get(); a.w = dw.get(); a.y = dy.get<float>(); a.ldy = N; a.M = M; a.N = N; a.K = K; a.accumulate = acc;
        gemm(a, scratch().g(), sms(), nullptr);
        rep.check(fmt("gemm %s M=%d N=%d K=%d%s", ty_name(ty), M, N, K, acc ? " +=" : ""), compare(download(Ty::F32, dy.get(), ref.size()), ref),
                  tol_accum(ty));
      }
    }
}

// A small model geometry for the LoRA and row-kernel tests (odd sizes on purpose).
ModelSpec lora_spec(int inter) {
  ModelSpec s;
  s.vocab = 300; s.hidden = 96; s.intermediate = inter; s.layers = 2; s.heads = 4; s.kv_heads = 2; s.head_dim = 24;
  s.max_adapters = 4; s.max_rank = 40; s.lora_pages = 100;
  return s;
}
// The CPU pool stores pages as float32 or bfloat16; give it the type that holds the rounded
// test adapters exactly.
ModelSpec cpu_lora_spec(ModelSpec s, Ty ty) {
  s.lora_dtype = ty == Ty::BF16 ? DType::BF16 : DType::F32;
  return s;
}
AdapterSpec random_adapter(Rng& r, const ModelSpec& s, int max_rank, Ty ty) {
  AdapterSpec a;
  a.max_rank = max_rank;
  const size_t n = size_t(s.layers) * kNumModules;
  a.rank.resize(n); a.scale.resize(n); a.a.resize(n); a.b.resize(n);
  for (size_t i = 0; i < n; i++) {
    const int m = int(i % kNumModules);
    const int rk = (i % 5 == 3) ? 0 : std::max(1, max_rank - r.below(3));
    a.rank[i] = std::min(rk, max_rank);
    a.scale[i] = 0.5f + r.uni();
    a.a[i] = randn(r, size_t(a.rank[i]) * module_in(s, m), 0.1f);
    a.b[i] = randn(r, size_t(a.rank[i]) * module_out(s, m), 0.1f);
    round_all(ty, a.a[i]);
    round_all(ty, a.b[i]);
  }
  return a;
}

struct LoraFixture {
  ModelSpec s;
  Ty ty;
  DeviceLora dev;
  LoraPool cpu;
  std::vector<int> slot_rank;
  std::vector<AdapterSpec> ad;
  LoraFixture(Rng& r, Ty t, int inter) : s(lora_spec(inter)), ty(t), dev(s, t), cpu(cpu_lora_spec(s, t)) {
    const int ranks[] = {40, 3, 16};
    int next = 0;
    for (int slot = 0; slot < 3; slot++) {
      AdapterSpec a = random_adapter(r, s, ranks[slot], t);
      std::vector<int> pages;
      for (int j = 0; j < a.max_rank; j++) pages.push_back((next++ * 37) % s.lora_pages);  // scattered pages
      dev.write(slot, pages, a);
      cpu.write(slot, pages, a);
      slot_rank.push_back(a.max_rank);
      ad.push_back(std::move(a));
    }
  }
  // y[t][off + o] += sum_j v[t][m][j] * B[o][j] for tokens with an adapter (float64 reference of
  // the expand alone; v is [T][7][max_rank]).
  void expand_cpu(int m, int layer, const std::vector<int32_t>& slots, const std::vector<float>& v, std::vector<float>& y, int ld, int off) const {
    for (size_t t = 0; t < slots.size(); t++) {
      if (slots[t] < 0) continue;
      const AdapterSpec& a = ad[size_t(slots[t])];
      const size_t idx = size_t(layer) * kNumModules + m;
      const int rk = a.rank[idx];
      const float* vt = v.data() + (t * kMods + m) * s.max_rank;
      for (int o = 0; o < module_out(s, m); o++) {
        double acc = 0;
        for (int j = 0; j < rk; j++) acc += double(vt[j]) * a.b[idx][size_t(o) * rk + j];
        y[t * ld + off + o] += float(acc);
      }
    }
  }
};

// Tokens in runs of slots (-1 = base), some runs longer than one LoRA item.
std::vector<int32_t> token_slots(Rng& r, int T) {
  std::vector<int32_t> v;
  while (int(v.size()) < T) {
    const int slot = r.below(4) - 1, len = 1 + r.below(r.below(4) == 0 ? 30 : 3);
    for (int i = 0; i < len && int(v.size()) < T; i++) v.push_back(slot);
  }
  return v;
}
std::vector<LoraItem> make_items(const std::vector<int32_t>& slots) {
  std::vector<LoraItem> items;
  const int T = int(slots.size());
  for (int t = 0; t < T;) {
    int e = t + 1;
    while (e < T && slots[size_t(e)] == slots[size_t(t)] && e - t < kItemTokens) e++;
    if (slots[size_t(t)] >= 0) items.push_back(LoraItem{slots[size_t(t)], t, e - t, 0});
    t = e;
  }
  return items;
}

// Shrink (riding on a GEMM launch, every GEMM path) then expand (segmented kernel) vs LoraPool::apply.
void test_lora(Report& rep, Rng& r) {
  for (Ty ty : {Ty::F32, Ty::BF16, Ty::F16}) {
    LoraFixture f(r, ty, 172);
    for (int T : {1, 5, 16, 37, 100}) {
      const auto slots = token_slots(r, T);
      const auto items = make_items(slots);
      DevBuf ditems = upload_vec(items), dslots = upload_vec(slots);
      std::vector<int> hdr = {int(items.size()), 0};
      DevBuf dhdr = upload_vec(hdr);
      const int layer = T % 2;
      for (std::vector<int> mods : {std::vector<int>{kQ, kK, kV}, std::vector<int>{kO}, std::vector<int>{kGate, kUp}, std::vector<int>{kDown}}) {
        const int in = module_in(f.s, mods[0]);
        auto x = randn(r, size_t(T) * in, 1.f);
        round_all(ty, x);
        DevBuf dx = upload(ty, x), dv(size_t(T) * kMods * f.s.max_rank * 4);
        poison(dv, Ty::F32);
        const int N = 24;
        auto w = randn(r, size_t(N) * in, 0.05f);
        DevBuf dw = upload(ty, w), dy(size_t(T) * N * 4);
        GemmArgs g;
        g.ty = ty; g.x = dx.get(); g.w = dw.get(); g.y = dy.get<float>(); g.ldy = N; g.M = T; g.N = N; g.K = in;
        g.lora.on = true; g.lora.lay = f.dev.layout(); g.lora.layer = layer; g.lora.nmod = int(mods.size());
        for (size_t i = 0; i < mods.size(); i++) g.lora.mods[i] = mods[i];
        g.lora.items = ditems.get<LoraItem>(); g.lora.n_items = dhdr.get<int>(); g.lora.max_items = T;  // grid sized as a graph would
        g.lora.rank_chunks = (40 + kRankChunk - 1) / kRankChunk; g.lora.v = dv.get<float>();
        gemm(g, scratch().g(), sms(), nullptr);
        // Expand every module into its own column range of y [T, sum out], starting from random y0.
        int total = 0;
        ExpandArgs e;
        e.lay = f.dev.layout(); e.ty = ty; e.layer = layer; e.nmod = int(mods.size());
        for (size_t i = 0; i < mods.size(); i++) { e.mods[i] = mods[i]; e.col_off[i] = total; total += module_out(f.s, mods[i]); }
        auto y0 = randn(r, size_t(T) * total, 1.f);
        DevBuf dy2 = upload(Ty::F32, y0);
        e.y = dy2.get<float>(); e.ldy = total; e.items = ditems.get<LoraItem>(); e.n_items = int(items.size()); e.v = dv.get<float>();
        lora_expand(e, nullptr);
        std::vector<float> ref = y0;
        f.cpu.begin_step(slots.data(), T);
        for (size_t i = 0; i < mods.size(); i++) {
          const int out = module_out(f.s, mods[i]);
          std::vector<float> ym(size_t(T) * out, 0.f);
          f.cpu.shrink(pool(), layer, {mods[i]}, x.data(), T);
          f.cpu.expand_rows(layer, mods[i], ym.data(), 0, out);
          for (int t = 0; t < T; t++)
            for (int o = 0; o < out; o++) ref[size_t(t) * total + e.col_off[i] + o] += ym[size_t(t) * out + o];
        }
        rep.check(fmt("lora shrink+expand %s T=%d mods=%zu(first %d)", ty_name(ty), T, mods.size(), mods[0]),
                  compare(download(Ty::F32, dy2.get(), ref.size()), ref), tol_accum(ty) * 10);
      }
    }
  }
}

// Residual + RMSNorm with the fused expand of o, and the fused gate/up expand + SiLU.
void test_rows(Report& rep, Rng& r) {
  for (Ty ty : {Ty::F32, Ty::BF16, Ty::F16}) {
    LoraFixture f(r, ty, 172);
    const int T = 23, H = f.s.hidden, I = f.s.intermediate, layer = 1;
    const auto slots = token_slots(r, T);
    DevBuf dslots = upload_vec(slots);
    // v: shrink results as the kernels read them, [T][7][max_rank], random.
    auto v = randn(r, size_t(T) * kMods * f.s.max_rank, 1.f);
    DevBuf dv = upload(Ty::F32, v);
    FusedExpand ex;
    ex.on = true; ex.lay = f.dev.layout(); ex.layer = layer; ex.tok_slot = dslots.get<int>(); ex.v = dv.get<float>();
    // x, norm weight; rows gather: every other token, reversed.
    auto x = randn(r, size_t(T) * H, 1.f), wn = randn(r, size_t(H), 0.2f);
    for (auto& w : wn) w += 1.f;
    std::vector<int32_t> rows;
    for (int t = T - 1; t >= 0; t -= 2) rows.push_back(t);
    for (bool gather : {false, true}) {
      for (bool fused : {false, true}) {
        DevBuf dx = upload(Ty::F32, x), dw = upload(Ty::F32, wn), drows = upload_vec(rows);
        const int nrows = gather ? int(rows.size()) : T;
        DevBuf dout(size_t(nrows) * H * ty_size(ty));
        poison(dout, ty);
        ResNormArgs a;
        a.ty = ty; a.x = dx.get<float>(); a.w = dw.get<float>(); a.out = dout.get(); a.rows = gather ? drows.get<int>() : nullptr;
        a.nrows = nrows; a.H = H; a.eps = 1e-5f; a.mod = kO; a.ex = ex; a.ex.on = fused;
        resnorm(a, nullptr);
        std::vector<float> xr = x;
        if (fused) f.expand_cpu(kO, layer, slots, v, xr, H, 0);
        std::vector<float> in(size_t(nrows) * H), ref(size_t(nrows) * H);
        for (int i = 0; i < nrows; i++) std::copy_n(xr.data() + size_t(gather ? rows[size_t(i)] : i) * H, H, in.data() + size_t(i) * H);
        const auto wb = to_bytes(Ty::F32, wn);
        rmsnorm(pool(), in.data(), WeightRef{wb.data(), DType::F32, 1, H}, ref.data(), nrows, H, 1e-5f);
        rep.check(fmt("resnorm %s%s%s", ty_name(ty), gather ? " gather" : "", fused ? " +lora(o)" : ""),
                  compare(download(ty, dout.get(), ref.size()), ref), tol_store(ty));
        if (fused && !gather) rep.check(fmt("resnorm %s residual written back", ty_name(ty)), compare(download(Ty::F32, dx.get(), xr.size()), xr), 1e-5);
      }
    }
    for (bool fused : {false, true}) {
      auto gu = randn(r, size_t(T) * 2 * I, 1.5f);
      DevBuf dgu = upload(Ty::F32, gu), dact(size_t(T) * I * ty_size(ty));
      poison(dact, ty);
      FusedExpand e2 = ex;
      e2.on = fused;
      silu_mul(ty, dgu.get<float>(), dact.get(), T, I, e2, nullptr);
      std::vector<float> g(size_t(T) * I), u(size_t(T) * I);
      std::vector<float> gu2 = gu;
      if (fused) {
        f.expand_cpu(kGate, layer, slots, v, gu2, 2 * I, 0);
        f.expand_cpu(kUp, layer, slots, v, gu2, 2 * I, I);
      }
      for (int t = 0; t < T; t++) {
        std::copy_n(gu2.data() + size_t(t) * 2 * I, I, g.data() + size_t(t) * I);
        std::copy_n(gu2.data() + size_t(t) * 2 * I + I, I, u.data() + size_t(t) * I);
      }
      silu_mul(g.data(), u.data(), int64_t(g.size()));
      rep.check(fmt("silu_mul %s%s", ty_name(ty), fused ? " +lora(gate,up)" : ""), compare(download(ty, dact.get(), g.size()), g), tol_store(ty));
    }
  }
}

// Bias + fused q/k/v expand (+ Qwen3's per-head q/k RMSNorm) + rotary + cache append vs a transcription of
// cpu_backend.cc.
void test_rope(Report& rep, Rng& r) {
  for (Ty ty : {Ty::F32, Ty::BF16, Ty::F16}) {
    LoraFixture f(r, ty, 172);
    const ModelSpec& s = f.s;
    const int nh = s.heads, nkv = s.kv_heads, D = s.head_dim, half = D / 2, QKV = (nh + 2 * nkv) * D, bs = 64, L = s.layers, layer = 1;
    const int starts[] = {0, 100, 5000}, lens[] = {4, 3, 2};
    std::vector<int32_t> pos, seg, block_off = {0}, table;
    int nblocks = 200;
    std::vector<int> perm(static_cast<size_t>(nblocks));
    std::iota(perm.begin(), perm.end(), 0);
    for (int i = nblocks - 1; i > 0; i--) std::swap(perm[size_t(i)], perm[size_t(r.below(i + 1))]);
    int used = 0;
    for (int sg = 0; sg < 3; sg++) {
      for (int i = 0; i < lens[sg]; i++) { pos.push_back(starts[sg] + i); seg.push_back(sg); }
      const int need = (starts[sg] + lens[sg] + bs - 1) / bs;
      for (int b = 0; b < need; b++) table.push_back(perm[size_t(used++)]);
      block_off.push_back(int(table.size()));
    }
    const int T = int(pos.size());
    const auto slots = token_slots(r, T);
    std::vector<float> inv(static_cast<size_t>(half));
    for (int i = 0; i < half; i++) inv[size_t(i)] = std::pow(10000.f, -2.f * i / D);
    auto qkv = randn(r, size_t(T) * QKV, 1.f), bias = randn(r, size_t(QKV), 0.3f), v = randn(r, size_t(T) * kMods * s.max_rank, 1.f);
    auto qn = randn(r, size_t(D), 0.1f), kn = randn(r, size_t(D), 0.1f);
    for (auto* w : {&qn, &kn})
      for (auto& x : *w) x += 1.f;
    // plain, + fused LoRA expand, + fused expand and q/k norms
    for (int variant = 0; variant < 3; variant++) {
      const bool fused = variant > 0, norm = variant == 2;
      DevBuf dqkv = upload(Ty::F32, qkv), dbias = upload(Ty::F32, bias), dinv = upload(Ty::F32, inv), dpos = upload_vec(pos), dseg = upload_vec(seg);
      DevBuf dqn = upload(Ty::F32, qn), dkn = upload(Ty::F32, kn);
      DevBuf doff = upload_vec(block_off), dtab = upload_vec(table), dslots = upload_vec(slots), dv = upload(Ty::F32, v);
      DevBuf dq(size_t(T) * nh * D * 4), dkv(size_t(nblocks) * L * 2 * nkv * bs * D * ty_size(ty));
      poison(dq, Ty::F32);
      poison(dkv, ty);
      RopeArgs a;
      a.ty = ty; a.qkv = dqkv.get<float>(); a.bias = dbias.get<float>(); a.inv_freq = dinv.get<float>(); a.positions = dpos.get<int>();
      a.tok_seg = dseg.get<int>(); a.seg_block_off = doff.get<int>(); a.block_table = dtab.get<int>(); a.q = dq.get<float>(); a.kv = dkv.get();
      a.M = T; a.nh = nh; a.nkv = nkv; a.D = D; a.layer = layer; a.layers = L; a.block_size = bs;
      a.ex.on = fused; a.ex.lay = f.dev.layout(); a.ex.layer = layer; a.ex.tok_slot = dslots.get<int>(); a.ex.v = dv.get<float>();
      if (norm) { a.q_norm = dqn.get<float>(); a.k_norm = dkn.get<float>(); a.eps = 1e-6f; }
      rope_kv(a, nullptr);
      std::vector<float> x = qkv;
      for (int t = 0; t < T; t++)
        for (int i = 0; i < QKV; i++) x[size_t(t) * QKV + i] += bias[size_t(i)];
      if (fused) {
        f.expand_cpu(kQ, layer, slots, v, x, QKV, 0);
        f.expand_cpu(kK, layer, slots, v, x, QKV, nh * D);
        f.expand_cpu(kV, layer, slots, v, x, QKV, (nh + nkv) * D);
      }
      std::vector<float> qref(size_t(T) * nh * D), kref, kgot, vref, vgot;
      const auto kvh = download(ty, dkv.get(), dkv.bytes() / ty_size(ty));
      for (int t = 0; t < T; t++) {
        float* row = x.data() + size_t(t) * QKV;
        if (norm)
          for (int hs = 0; hs < nh + nkv; hs++) {
            float* h = row + hs * D;
            const float* w = (hs < nh ? qn : kn).data();
            double ss = 0;
            for (int i = 0; i < D; i++) ss += double(h[i]) * h[i];
            const float inv_rms = float(1.0 / std::sqrt(ss / D + 1e-6));
            for (int i = 0; i < D; i++) h[i] = w[i] * (h[i] * inv_rms);
          }
        for (int hs = 0; hs < nh + nkv; hs++)
          for (int i = 0; i < half; i++) {
            const float ang = float(pos[size_t(t)]) * inv[size_t(i)], c = std::cos(ang), sn = std::sin(ang);
            const float x1 = row[hs * D + i], x2 = row[hs * D + i + half];
            row[hs * D + i] = x1 * c - x2 * sn;
            row[hs * D + i + half] = x2 * c + x1 * sn;
          }
        std::copy_n(row, nh * D, qref.data() + size_t(t) * nh * D);
        const int blk = table[size_t(block_off[size_t(seg[size_t(t)])] + pos[size_t(t)] / bs)], sl = pos[size_t(t)] % bs;
        for (int h = 0; h < nkv; h++)
          for (int d = 0; d < D; d++) {
            auto at = [&](int kind) { return kvh[((((size_t(blk) * L + layer) * 2 + kind) * nkv + h) * bs + sl) * D + d]; };
            kref.push_back(row[(nh + h) * D + d]); kgot.push_back(at(0));
            vref.push_back(row[(nh + nkv + h) * D + d]); vgot.push_back(at(1));
          }
      }
      const char* what = norm ? " +lora +qk norm" : fused ? " +lora" : "";
      rep.check(fmt("rope q %s%s", ty_name(ty), what), compare(download(Ty::F32, dq.get(), qref.size()), qref), 2e-5);
      rep.check(fmt("rope k -> paged cache %s%s", ty_name(ty), what), compare(kgot, kref), tol_store(ty));
      rep.check(fmt("v -> paged cache %s%s", ty_name(ty), what), compare(vgot, vref), tol_store(ty));
    }
  }
}

struct AttnCase { Ty ty; int D, nh, nkv, bs, window; };

void test_attention(Report& rep, Rng& r) {
  const AttnCase cases[] = {{Ty::F32, 16, 4, 2, 16, 0},   {Ty::F32, 16, 4, 1, 5, 0},    {Ty::BF16, 128, 32, 8, 16, 0}, {Ty::BF16, 64, 8, 8, 16, 0},
                            {Ty::F16, 128, 16, 1, 7, 0},  {Ty::BF16, 128, 8, 2, 16, 50}, {Ty::F16, 64, 4, 4, 32, 0},   {Ty::BF16, 80, 4, 2, 16, 0},
                            {Ty::F32, 128, 8, 2, 16, 0},  {Ty::F32, 10, 6, 1, 3, 7},    {Ty::BF16, 10, 6, 3, 3, 0}};  // odd head_dim: element loads
  const int L = 2, layer = 1;
  for (const AttnCase& c : cases) {
    const int starts[] = {0, 37, 700, 0, 250}, lens[] = {1, 1, 1, 130, 70};
    std::vector<int32_t> pos, seg, block_off = {0}, table;
    int nblocks = 0;
    for (int sg = 0; sg < 5; sg++) nblocks += (starts[sg] + lens[sg] + c.bs - 1) / c.bs;
    std::vector<int> perm(static_cast<size_t>(nblocks));
    std::iota(perm.begin(), perm.end(), 0);
    for (int i = nblocks - 1; i > 0; i--) std::swap(perm[size_t(i)], perm[size_t(r.below(i + 1))]);
    int used = 0;
    for (int sg = 0; sg < 5; sg++) {
      for (int i = 0; i < lens[sg]; i++) { pos.push_back(starts[sg] + i); seg.push_back(sg); }
      const int need = (starts[sg] + lens[sg] + c.bs - 1) / c.bs;
      for (int b = 0; b < need; b++) table.push_back(perm[size_t(used++)]);
      block_off.push_back(int(table.size()));
    }
    const int T = int(pos.size()), D = c.D, G = c.nh / c.nkv;
    auto kv = randn(r, size_t(nblocks) * L * 2 * c.nkv * c.bs * D, 1.f), q = randn(r, size_t(T) * c.nh * D, 1.f);
    round_all(c.ty, kv);
    const float scale = 1.f / std::sqrt(float(D));
    std::vector<float> ref(size_t(T) * c.nh * D);
    for (int t = 0; t < T; t++) {
      const int p = pos[size_t(t)], first = c.window > 0 ? std::max(0, p - c.window + 1) : 0;
      const int32_t* tab = table.data() + block_off[size_t(seg[size_t(t)])];
      for (int h = 0; h < c.nh; h++) {
        const int kh = h / G;
        auto at = [&](int j, int kind) { return kv.data() + ((((size_t(tab[j / c.bs]) * L + layer) * 2 + kind) * c.nkv + kh) * c.bs + j % c.bs) * D; };
        std::vector<double> sc;
        double mx = -1e300;
        for (int j = first; j <= p; j++) {
          double d = 0;
          for (int i = 0; i < D; i++) d += double(q[(size_t(t) * c.nh + h) * D + i]) * at(j, 0)[i];
          sc.push_back(d * scale);
          mx = std::max(mx, sc.back());
        }
        double sum = 0;
        for (auto& x : sc) sum += x = std::exp(x - mx);
        for (int i = 0; i < D; i++) {
          double o = 0;
          for (int j = first; j <= p; j++) o += sc[size_t(j - first)] * at(j, 1)[i];
          ref[(size_t(t) * c.nh + h) * D + i] = float(o / sum);
        }
      }
    }
    DevBuf dkv = upload(c.ty, kv), dq = upload(Ty::F32, q), dpos = upload_vec(pos), dseg = upload_vec(seg), doff = upload_vec(block_off), dtab = upload_vec(table);
    DevBuf dout(size_t(T) * c.nh * D * ty_size(c.ty));
    AttnArgs a;
    a.ty = c.ty; a.q = dq.get<float>(); a.kv = dkv.get(); a.out = dout.get(); a.positions = dpos.get<int>(); a.tok_seg = dseg.get<int>();
    a.seg_block_off = doff.get<int>(); a.block_table = dtab.get<int>(); a.nh = c.nh; a.nkv = c.nkv; a.D = D; a.layer = layer; a.layers = L;
    a.block_size = c.bs; a.window = c.window; a.scale = scale; a.ws = scratch().aws.get<float>(); a.counters = scratch().acnt.get<int>();
    const std::string tag = fmt("%s D=%d h=%d/%d bs=%d w=%d", ty_name(c.ty), D, c.nh, c.nkv, c.bs, c.window);
    for (int splits : {1, 3, attn_decode_splits(T, c.nh, c.nkv, sms()), 32}) {
      poison(dout, c.ty);
      a.n_tok = T; a.tok_list = nullptr; a.splits = splits; a.n_tiles = 0;
      if (attn_decode_needs(T, c.nh, c.nkv, D, splits).ws_floats * 4 > scratch().aws.bytes()) continue;
      if (quick() && splits == 32 && D > 16) continue;  // 32 splits: covered by the small-D cases
      attention_decode(a, nullptr);
      rep.check("attn decode " + tag + fmt(" splits=%d", splits), compare(download(c.ty, dout.get(), ref.size()), ref), tol_store(c.ty));
    }
    if (attention_prefill_supported(c.ty, D)) {
      std::vector<AttnTile> tiles;
      std::vector<float> sub_ref;
      std::vector<size_t> toks;
      for (int sg = 0, t0 = 0; sg < 5; t0 += lens[sg], sg++)
        if (lens[sg] >= 16)
          for (int t = t0; t < t0 + lens[sg]; t += 64) tiles.push_back(AttnTile{sg, t, std::min(64, t0 + lens[sg] - t), 0});
      for (auto& tl : tiles)
        for (int i = 0; i < tl.ntok; i++) {
          toks.push_back(size_t(tl.tok0 + i));
          sub_ref.insert(sub_ref.end(), ref.begin() + long((tl.tok0 + i) * c.nh * D), ref.begin() + long((tl.tok0 + i + 1) * c.nh * D));
        }
      DevBuf dtiles = upload_vec(tiles);
      poison(dout, c.ty);
      a.n_tok = 0; a.tiles = dtiles.get<AttnTile>(); a.n_tiles = int(tiles.size());
      attention_prefill(a, nullptr);
      const auto all = download(c.ty, dout.get(), ref.size());
      std::vector<float> got;
      for (size_t t : toks) got.insert(got.end(), all.begin() + long(t * c.nh * D), all.begin() + long((t + 1) * c.nh * D));
      rep.check("attn prefill " + tag, compare(got, sub_ref), tol_store(c.ty) * 1.5);
    }
  }
}

// The device sampler against cpu sample_token on the same logits, params, history and masks.
void test_sampling(Report& rep, Rng& r) {
  for (int V : {1000, 32000, 128256}) {
    const int S = 24, words = (V + 31) / 32;
    std::vector<float> logits(size_t(S) * V);
    std::vector<SampleParamsDev> prm(static_cast<size_t>(S));
    std::vector<SamplingParams> cpu_p(static_cast<size_t>(S));
    std::vector<int32_t> hist_off = {0}, hist, gen_start, seg_mask, sample_row;
    std::vector<uint32_t> masks;
    int max_top = 0;
    for (int sg = 0; sg < S; sg++) {
      float* row = logits.data() + size_t(sg) * V;
      const bool ties = sg % 6 == 5;
      for (int i = 0; i < V; i++) row[i] = ties ? std::round(r.normal() * 4.f) * 0.5f : r.normal() * 3.f;
      SamplingParams p;
      const int kind = sg % 12;
      p.temperature = (kind == 0 || kind == 1 || kind == 8) ? 0.f : 0.3f + 1.5f * r.uni();
      if (kind == 3 || kind == 6 || kind == 9 || kind >= 10) p.top_k = kind == 9 ? 1 : 1 + r.below(300);
      if (kind == 4 || kind == 6 || kind == 7 || kind == 11) p.top_p = 0.3f + 0.69f * r.uni();
      if (kind == 5 || kind == 6 || kind == 10) p.min_p = 0.01f + 0.2f * r.uni();
      if (kind == 1 || kind == 6 || kind == 11) { p.repetition_penalty = 1.05f + r.uni(); p.presence_penalty = r.sym(); p.frequency_penalty = r.sym(); }
      p.seed = r.next() >> 12;
      p.draw = r.below(1000);
      p.top_logprobs = (kind % 3 == 0) ? 1 + r.below(20) : 0;
      max_top = std::max(max_top, p.top_logprobs);
      cpu_p[size_t(sg)] = p;
      prm[size_t(sg)] = SampleParamsDev{p.temperature, p.top_p, p.min_p, p.repetition_penalty, p.presence_penalty, p.frequency_penalty,
                                        p.top_k, p.draw, p.top_logprobs, 0, static_cast<unsigned long long>(p.seed)};
      const int hl = r.below(300);
      for (int i = 0; i < hl; i++) hist.push_back(r.below(4) == 0 ? r.below(20) : r.below(V));  // some repeats
      hist_off.push_back(int(hist.size()));
      gen_start.push_back(r.below(hl + 1));
      if (kind == 7 || kind == 8 || sg % 5 == 2) {
        seg_mask.push_back(int(masks.size() / size_t(words)));
        const float density = kind == 8 ? 0.001f : 0.3f;
        for (int w = 0; w < words; w++) {
          uint32_t m = 0;
          for (int b = 0; b < 32; b++) if (r.uni() < density) m |= 1u << b;
          masks.push_back(m);
        }
        masks[masks.size() - size_t(words) + size_t(r.below(words))] |= 1u;  // never empty
      } else {
        seg_mask.push_back(-1);
      }
      sample_row.push_back(sg % 7 == 6 ? -1 : sg);  // some segments do not sample
    }
    std::vector<int> hdr = {0, max_top};
    DevBuf dlog = upload(Ty::F32, logits), dwork(size_t(S) * V * 4), dbits(size_t(S) * 2 * words * 4), drow = upload_vec(sample_row);
    DevBuf dprm = upload_vec(prm), dho = upload_vec(hist_off), dh = upload_vec(hist), dgs = upload_vec(gen_start), dsm = upload_vec(seg_mask);
    DevBuf dmask = upload_vec(masks), dhdr = upload_vec(hdr);
    DevBuf dtok(size_t(S) * 4), dlp(size_t(S) * 4), derr(size_t(S) * 4), dtid(size_t(S) * 20 * 4 + 16), dtlp(size_t(S) * 20 * 4 + 16);
    for (DevBuf* b : {&dtok, &dlp, &derr, &dtid, &dtlp}) poison(*b, Ty::F32);
    SampleArgs a;
    a.logits = dlog.get<float>(); a.work = dwork.get<float>(); a.bits = dbits.get<uint32_t>(); a.V = V; a.S = S; a.sample_row = drow.get<int>();
    a.params = dprm.get<SampleParamsDev>(); a.hist_off = dho.get<int>(); a.hist = dh.get<int>(); a.gen_start = dgs.get<int>();
    a.seg_mask = dsm.get<int>(); a.masks = dmask.get<uint32_t>(); a.max_top = dhdr.get<int>() + 1;
    a.token = dtok.get<int>(); a.logprob = dlp.get<float>(); a.error = derr.get<int>(); a.top_ids = dtid.get<int>(); a.top_lp = dtlp.get<float>();
    sample(a, nullptr);
    const auto tok = download_vec<int>(dtok.get(), size_t(S)), err = download_vec<int>(derr.get(), size_t(S));
    const auto lp = download_vec<float>(dlp.get(), size_t(S));
    const auto tid = download_vec<int>(dtid.get(), size_t(S) * max_top);
    const auto tlp = download_vec<float>(dtlp.get(), size_t(S) * max_top);
    int tok_mismatch = 0, top_mismatch = 0, errs = 0;
    double lp_err = 0;
    for (int sg = 0; sg < S; sg++) {
      errs += err[size_t(sg)] != 0;
      if (sample_row[size_t(sg)] < 0) {
        tok_mismatch += tok[size_t(sg)] != -1;
        continue;
      }
      std::vector<float> row(logits.begin() + long(size_t(sg) * V), logits.begin() + long(size_t(sg + 1) * V));
      const int mi = seg_mask[size_t(sg)];
      const SampleResult res = sample_token(row.data(), V, cpu_p[size_t(sg)], hist.data() + hist_off[size_t(sg)],
                                            hist_off[size_t(sg) + 1] - hist_off[size_t(sg)], gen_start[size_t(sg)],
                                            mi >= 0 ? masks.data() + size_t(mi) * words : nullptr);
      if (res.token != tok[size_t(sg)]) {
        tok_mismatch++;
        std::printf("  sampling V=%d seg %d (kind %d): cpu %d gpu %d\n", V, sg, sg % 12, res.token, tok[size_t(sg)]);
      }
      lp_err = std::max(lp_err, double(std::fabs(res.logprob - lp[size_t(sg)])));
      for (size_t i = 0; i < res.top_ids.size(); i++) {
        top_mismatch += res.top_ids[i] != tid[size_t(sg) * max_top + i];
        lp_err = std::max(lp_err, double(std::fabs(res.top_logprobs[i] - tlp[size_t(sg) * max_top + i])));
      }
    }
    rep.expect(fmt("sample V=%d: tokens equal cpu (24 segments)", V), tok_mismatch == 0 && errs == 0, fmt("%d differ, %d errors", tok_mismatch, errs));
    rep.expect(fmt("sample V=%d: top-n ids equal cpu", V), top_mismatch == 0, fmt("%d differ", top_mismatch));
    rep.expect(fmt("sample V=%d: log-probs within 1e-4 (max %.1e)", V, lp_err), lp_err < 1e-4);
  }
  // A mask that allows nothing reports an error for its segment.
  {
    const int V = 100, words = 4;
    std::vector<float> logits = randn(r, size_t(V), 1.f);
    SampleParamsDev p{0.f, 1.f, 0.f, 1.f, 0.f, 0.f, 0, 0, 0, 0, 0ull};
    std::vector<int> zero1 = {0}, zero2 = {0, 0}, hdr = {0, 0};
    std::vector<uint32_t> masks(size_t(words), 0u);
    DevBuf dlog = upload(Ty::F32, logits), dwork(size_t(V) * 4), dbits(64), drow = upload_vec(zero1), dprm = upload_vec(std::vector<SampleParamsDev>{p});
    DevBuf dho = upload_vec(zero2), dh(16), dgs = upload_vec(zero1), dsm = upload_vec(zero1), dmask = upload_vec(masks), dhdr = upload_vec(hdr);
    DevBuf dtok(16), dlp(16), derr(16), dtid(16), dtlp(16);
    SampleArgs a;
    a.logits = dlog.get<float>(); a.work = dwork.get<float>(); a.bits = dbits.get<uint32_t>(); a.V = V; a.S = 1; a.sample_row = drow.get<int>();
    a.params = dprm.get<SampleParamsDev>(); a.hist_off = dho.get<int>(); a.hist = dh.get<int>(); a.gen_start = dgs.get<int>();
    a.seg_mask = dsm.get<int>(); a.masks = dmask.get<uint32_t>(); a.max_top = dhdr.get<int>() + 1;
    a.token = dtok.get<int>(); a.logprob = dlp.get<float>(); a.error = derr.get<int>(); a.top_ids = dtid.get<int>(); a.top_lp = dtlp.get<float>();
    sample(a, nullptr);
    rep.expect("sample: empty mask reports an error", download_vec<int>(derr.get(), 1)[0] == 1);
  }
}

void test_embed(Report& rep, Rng& r) {
  for (Ty ty : {Ty::F32, Ty::BF16, Ty::F16}) {
    const int V = 517, H = 72, T = 19;
    auto table = randn(r, size_t(V) * H, 1.f);
    round_all(ty, table);
    std::vector<int32_t> toks;
    std::vector<float> ref;
    for (int t = 0; t < T; t++) {
      toks.push_back(r.below(V));
      ref.insert(ref.end(), table.begin() + long(toks.back()) * H, table.begin() + long(toks.back() + 1) * H);
    }
    DevBuf dt = upload(ty, table), dtok = upload_vec(toks), dx(size_t(T) * H * 4);
    poison(dx, Ty::F32);
    embed(ty, dt.get(), dtok.get<int>(), T, H, dx.get<float>(), nullptr);
    rep.check(fmt("embed %s", ty_name(ty)), compare(download(Ty::F32, dx.get(), ref.size()), ref), 0);
  }
}

void test_copy(Report& rep, Rng& r) {
  const size_t n = (size_t(1) << 22) + 64;
  auto v = randn(r, n, 1.f);
  DevBuf a = upload(Ty::F32, v), b(n * 4);
  poison(b, Ty::F32);
  copy_bytes(b.get(), a.get(), n * 4, nullptr);
  rep.check("copy_bytes (bandwidth probe)", compare(download(Ty::F32, b.get(), n), v), 0);
}

}  // namespace

void kernel_tests(Report& rep, uint64_t seed) {
  Rng r(seed);
  test_embed(rep, r);
  test_copy(rep, r);
  test_gemm(rep, r);
  test_lora(rep, r);
  test_rows(rep, r);
  test_rope(rep, r);
  test_attention(rep, r);
  test_sampling(rep, r);
}

}  // namespace lpt
