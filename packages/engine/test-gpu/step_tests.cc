// Whole steps: the CUDA backend against the CPU backend on random models (float32 with hf-tiny's
// shapes, bfloat16 and float16 with tensor-core shapes), with adapters of several ranks, mixed
// prefill/decode batches, chunked prefill, repeated decode shapes (eager, capture, replay of CUDA
// graphs), sampling, and an adapter upload racing the running steps. Also holds main().
#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>

#include "test_util.h"

namespace lpt {

using namespace lp;
using namespace lp::cu;

namespace {

struct HostModel {
  ModelSpec spec;
  std::vector<std::vector<uint8_t>> bufs;
  WeightRef add(Rng& r, Ty ty, int64_t rows, int64_t cols, float std, float mean = 0.f) {
    std::vector<float> v = randn(r, size_t(rows * cols), std);
    for (auto& x : v) x += mean;
    bufs.push_back(to_bytes(ty, v));
    return WeightRef{bufs.back().data(), dtype_of(ty), rows, cols};
  }
};

struct Dims { int vocab, hidden, inter, layers, heads, kv, hd; bool bias; int window; bool qk_norm = false; };

std::unique_ptr<HostModel> make_model(Rng& r, Ty ty, const Dims& d) {
  auto m = std::make_unique<HostModel>();
  m->bufs.reserve(size_t(d.layers) * 16 + 8);
  ModelSpec& s = m->spec;
  s.vocab = d.vocab; s.hidden = d.hidden; s.intermediate = d.inter; s.layers = d.layers; s.heads = d.heads; s.kv_heads = d.kv; s.head_dim = d.hd;
  s.rms_eps = 1e-5f; s.sliding_window = d.window; s.qk_norm = d.qk_norm;
  for (int i = 0; i < d.hd / 2; i++) s.inv_freq.push_back(std::pow(10000.f, -2.f * i / d.hd));
  s.embed = m->add(r, ty, d.vocab, d.hidden, 1.f);
  s.final_norm = m->add(r, Ty::F32, 1, d.hidden, 0.1f, 1.f);
  s.lm_head = m->add(r, ty, d.vocab, d.hidden, 1.f / std::sqrt(float(d.hidden)));
  s.layer.resize(size_t(d.layers));
  for (auto& L : s.layer) {
    L.attn_norm = m->add(r, Ty::F32, 1, d.hidden, 0.1f, 1.f);
    L.ffn_norm = m->add(r, Ty::F32, 1, d.hidden, 0.1f, 1.f);
    for (int mo = 0; mo < kNumModules; mo++)
      L.proj[mo] = m->add(r, ty, module_out(s, mo), module_in(s, mo), 1.f / std::sqrt(float(module_in(s, mo))));
    if (d.bias) {
      L.q_bias = m->add(r, Ty::F32, 1, d.heads * d.hd, 0.1f);
      L.k_bias = m->add(r, Ty::F32, 1, d.kv * d.hd, 0.1f);
      L.v_bias = m->add(r, Ty::F32, 1, d.kv * d.hd, 0.1f);
    }
    if (d.qk_norm) {
      L.q_norm = m->add(r, Ty::F32, 1, d.hd, 0.1f, 1.f);
      L.k_norm = m->add(r, Ty::F32, 1, d.hd, 0.1f, 1.f);
    }
  }
  s.kv_blocks = 256; s.block_size = 16; s.max_adapters = 4; s.max_rank = 32; s.lora_pages = 128; s.threads = 4;
  return m;
}

AdapterSpec adapter(Rng& r, const ModelSpec& s, int rank) {
  AdapterSpec a;
  a.max_rank = rank;
  const size_t n = size_t(s.layers) * kNumModules;
  a.rank.resize(n); a.scale.resize(n); a.a.resize(n); a.b.resize(n);
  for (size_t i = 0; i < n; i++) {
    const int m = int(i % kNumModules);
    a.rank[i] = (i % 4 == 1) ? 0 : rank - int(i % 3 == 2);
    a.scale[i] = 2.f / float(rank);
    a.a[i] = randn(r, size_t(a.rank[i]) * module_in(s, m), 1.f / std::sqrt(float(module_in(s, m))));
    a.b[i] = randn(r, size_t(a.rank[i]) * module_out(s, m), 0.2f);
  }
  return a;
}

struct Seq { int slot, pos; std::vector<int32_t> table; std::vector<int32_t> history; int gen_start; SamplingParams sp; };

struct Item { int seq; std::vector<int32_t> tokens; bool sample, all; int mask = -1; };

StepInput build(std::vector<Seq>& seqs, const std::vector<Item>& items, const std::vector<uint32_t>& masks, int vocab) {
  StepInput in;
  in.seg_offsets = {0}; in.block_offsets = {0}; in.hist_offsets = {0};
  for (const Item& it : items) {
    Seq& s = seqs[size_t(it.seq)];
    for (size_t i = 0; i < it.tokens.size(); i++) { in.tokens.push_back(it.tokens[i]); in.positions.push_back(s.pos + int(i)); }
    in.seg_offsets.push_back(int(in.tokens.size()));
    in.seg_slot.push_back(s.slot);
    in.block_table.insert(in.block_table.end(), s.table.begin(), s.table.end());
    in.block_offsets.push_back(int(in.block_table.size()));
    in.seg_sample.push_back(it.sample);
    in.seg_all_logits.push_back(it.all);
    SamplingParams sp = s.sp;
    sp.draw = int(s.history.size());
    in.sampling.push_back(sp);
    in.max_top_logprobs = std::max(in.max_top_logprobs, sp.top_logprobs);
    in.hist_tokens.insert(in.hist_tokens.end(), s.history.begin(), s.history.end());
    in.hist_offsets.push_back(int(in.hist_tokens.size()));
    in.hist_generated_start.push_back(s.gen_start);
    in.seg_mask.push_back(it.mask);
  }
  in.masks = masks;
  (void)vocab;
  return in;
}

void run_scenario(Report& rep, Rng& r, Ty ty, const Dims& d, const std::string& name) {
  auto hm = make_model(r, ty, d);
  const ModelSpec& s = hm->spec;
  auto cpu = make_cpu_backend(s);
  auto gpu = make_cuda_backend(s);
  const int ranks[] = {8, 32, 4};
  int next_page = 0;
  for (int slot = 0; slot < 3; slot++) {
    AdapterSpec a = adapter(r, s, ranks[slot]);
    std::vector<int> pages;
    for (int j = 0; j < a.max_rank; j++) pages.push_back(next_page++);
    cpu->write_adapter(slot, pages, a);
    gpu->write_adapter(slot, pages, a);
  }
  const double ltol = ty == Ty::F32 ? 1e-4 : 6e-2;  // 16-bit: activations and KV are rounded on the GPU only
  std::vector<Seq> seqs;
  int next_block = 0;
  auto new_seq = [&](int slot, SamplingParams sp) {
    Seq q{slot, 0, {}, {}, 0, sp};
    for (int b = 0; b < 16; b++) q.table.push_back(next_block++);  // 256 positions
    seqs.push_back(q);
    return int(seqs.size()) - 1;
  };
  auto prompt = [&](int n) {
    std::vector<int32_t> t;
    for (int i = 0; i < n; i++) t.push_back(r.below(s.vocab));
    return t;
  };
  SamplingParams greedy, hot, pen;
  hot.temperature = 0.8f; hot.top_p = 0.9f; hot.top_k = 40; hot.top_logprobs = 3; hot.seed = 1234;
  pen.temperature = 1.1f; pen.min_p = 0.05f; pen.repetition_penalty = 1.2f; pen.presence_penalty = 0.3f; pen.frequency_penalty = 0.2f; pen.seed = 99;
  const int a0 = new_seq(-1, greedy), a1 = new_seq(1, greedy), a2 = new_seq(0, hot);
  int step_no = 0, tok_mismatch = 0;
  auto run = [&](const std::vector<Item>& items, const std::vector<uint32_t>& masks, bool defer_masks = false) {
    StepInput in = build(seqs, items, masks, s.vocab);
    StepOutput oc, og;
    cpu->step(in, oc);
    if (defer_masks) {
      // Deferred masks (JSON mode): the GPU step starts with zeroed placeholders and gets the real
      // masks, as from the JS thread, once its forward pass is queued; it must sample the same.
      const std::vector<uint32_t> real = in.masks;
      std::fill(in.masks.begin(), in.masks.end(), 0u);
      gpu->step(in, og, [&] { in.masks = real; });
    } else {
      gpu->step(in, og);
    }
    const std::string tag = name + " step " + std::to_string(step_no++) + " T=" + std::to_string(in.tokens.size());
    if (!oc.logits.empty()) rep.check(tag + " logits", compare(og.logits, oc.logits), ltol);
    int mism = 0;
    for (size_t i = 0; i < items.size(); i++) {
      Seq& q = seqs[size_t(items[i].seq)];
      q.history.insert(q.history.end(), items[i].tokens.begin(), items[i].tokens.end());
      q.pos += int(items[i].tokens.size());
      if (items[i].sample) {
        mism += oc.token[i] != og.token[i];
        if (ty == Ty::F32 && std::fabs(oc.logprob[i] - og.logprob[i]) > 1e-3f) mism++;
        q.history.push_back(oc.token[i]);  // both continue on the CPU's choice
      }
    }
    tok_mismatch += mism;
    if (ty == Ty::F32) rep.expect(tag + " sampled tokens equal cpu", mism == 0, std::to_string(mism) + " differ");
  };
  // Prefill path (T > 64): three prompts, base and two adapters, tiled attention.
  run({{a0, prompt(40), false, true}, {a1, prompt(30), true, false}, {a2, prompt(20), true, true}}, {});
  for (auto q : {a0, a1, a2}) seqs[size_t(q)].gen_start = int(seqs[size_t(q)].history.size());
  // Mixed decode-path step: decode tokens plus two short prompts (one with an adapter).
  const int a3 = new_seq(2, pen), a4 = new_seq(-1, hot);
  auto last = [&](int q) { return std::vector<int32_t>{seqs[size_t(q)].history.back()}; };
  // seq a0 sampled nothing yet: feed a token of its own.
  seqs[size_t(a0)].history.push_back(r.below(s.vocab));
  run({{a0, last(a0), true, true}, {a1, last(a1), true, true}, {a2, last(a2), true, false}, {a3, prompt(12), true, true}, {a4, prompt(8), true, false}}, {});
  // Pure decode, same shape 6 times: eager, captured, then replayed graphs; one segment masked.
  // Then 6 more with the masks deferred (a graph of the forward pass alone, sampling after it).
  const int words = (s.vocab + 31) / 32;
  for (int k = 0; k < 12; k++) {
    std::vector<uint32_t> mask(static_cast<size_t>(words));
    for (auto& w : mask) w = uint32_t(r.next());
    run({{a0, last(a0), true, true}, {a1, last(a1), true, true}, {a2, last(a2), true, true}, {a3, last(a3), true, true, 0}, {a4, last(a4), true, true}}, mask, k >= 6);
  }
  // Chunked prefill continuing a sequence (start > 0) next to decode tokens, T > 64.
  run({{a0, prompt(90), true, true}, {a1, last(a1), true, true}, {a3, last(a3), true, false}}, {});
  // An adapter upload racing decode steps (slot 3, its own pages).
  {
    std::thread writer([&] {
      Rng r2(7);
      for (int k = 0; k < 4; k++) {
        AdapterSpec a = adapter(r2, s, 16);
        std::vector<int> pages;
        for (int j = 0; j < 16; j++) pages.push_back(100 + j);
        gpu->write_adapter(3, pages, a);
        gpu->clear_slot(3);
      }
    });
    for (int k = 0; k < 4; k++) run({{a1, last(a1), true, true}, {a2, last(a2), true, true}, {a4, last(a4), true, true}}, {});
    writer.join();
  }
  if (ty != Ty::F32) rep.expect(name + ": sampled tokens vs cpu (16-bit, informational)", true, std::to_string(tok_mismatch) + " differ");
}

}  // namespace

void step_tests(Report& rep, uint64_t seed) {
  Rng r(seed);
  const Dims tiny{512, 64, 172, 2, 4, 2, 16, false, 0};      // hf-tiny llama shapes
  const Dims tiny_qwen{512, 64, 172, 2, 4, 2, 16, true, 0};  // + q/k/v biases
  const Dims small{1000, 256, 512, 3, 8, 2, 64, false, 0};   // tensor-core paths, GQA 4
  const Dims window{700, 128, 256, 2, 4, 4, 32, false, 24};  // sliding window
  for (int graphs : {1, 0}) {
    setenv("LORAPLEX_CUDA_GRAPHS", graphs ? "1" : "0", 1);
    const std::string g = graphs ? "" : " (no graphs)";
    run_scenario(rep, r, Ty::F32, tiny, "f32 tiny" + g);
    run_scenario(rep, r, Ty::F32, tiny_qwen, "f32 tiny+bias" + g);
    run_scenario(rep, r, Ty::BF16, small, "bf16 small" + g);
    if (graphs) {
      run_scenario(rep, r, Ty::F16, small, "f16 small");
      run_scenario(rep, r, Ty::F32, window, "f32 window");
      run_scenario(rep, r, Ty::BF16, window, "bf16 window");
    }
  }
  // Qwen3: per-head q/k RMSNorm, head_dim != hidden / heads (own random stream: the runs above keep theirs).
  Rng rq(seed + 99);
  setenv("LORAPLEX_CUDA_GRAPHS", "1", 1);
  const Dims tiny_qwen3{512, 64, 172, 2, 4, 2, 32, false, 0, true};  // hf-tiny-v2 qwen3 shapes
  const Dims small_qwen3{1000, 128, 256, 2, 4, 2, 64, false, 0, true};
  run_scenario(rep, rq, Ty::F32, tiny_qwen3, "f32 qwen3 q/k norm, head_dim 32 != 64/4");
  run_scenario(rep, rq, Ty::BF16, small_qwen3, "bf16 qwen3 q/k norm, head_dim 64 != 128/4");
}

}  // namespace lpt

int main(int argc, char** argv) {
  const int n = lp::cuda_device_count();
  if (n <= 0) {
    std::printf("cuda_kernel_tests: no CUDA device, nothing to test\n");
    return 77;
  }
  uint64_t seed = 20251121;
  std::string only;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a.rfind("--seed=", 0) == 0) seed = std::strtoull(a.c_str() + 7, nullptr, 10);
    else if (a.rfind("--only=", 0) == 0) only = a.substr(7);
    else if (a == "--quick") lpt::quick() = true;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm_%d%d, %d SMs), seed %llu\n\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount, (unsigned long long)seed);
  std::printf("| %-58s | %-9s | %-9s | %-8s | %-5s | %s |\n|---|---|---|---|---|---|\n", "check", "rel err", "max abs", "bound", "NaN", "result");
  lpt::Report rep;
  try {
    if (only.empty() || only == "kernels") lpt::kernel_tests(rep, seed);
    if (only.empty() || only == "steps") lpt::step_tests(rep, seed + 1);
  } catch (const std::exception& e) {
    std::printf("\nFATAL: %s\n", e.what());
    rep.failed++;
  }
  std::printf("\n%d passed, %d failed\n", rep.passed, rep.failed);
  return rep.failed ? 1 : 0;
}
