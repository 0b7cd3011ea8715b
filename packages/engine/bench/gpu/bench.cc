// GPU benchmark of the CUDA backend on a Llama-3-8B-shaped model whose bfloat16 weights are
// generated on the device (ModelSpec::random_weights): no files, no Node.js.
//
// Reports, in one run (markdown on stdout, JSON with --json=FILE):
//   - device copy bandwidth (a 16-byte-vector device-to-device copy; bytes read + written)
//   - decode step time at batch 1, 8, 32, 64 against the floor (bytes read per step / bandwidth)
//   - decode throughput with 1, 8, 32, 64 distinct rank-16 adapters on all seven modules against
//     base-only at the same batch size, and against the byte-floor ratio base / (base + adapters)
//   - adapter upload time, and decode step time while adapters upload on another thread
//   - per-kernel times of one decode step at batch 1 and 32 (kernel_times.cc): each projection GEMM
//     with and without its LoRA shrink, decode attention at context 512 and 2048, the LM head
//   - decode at a 2,048-token context, and sampled decoding (temperature 1, top_p 0.9) against greedy
//   - prefill TFLOP/s against the matrix rate measured here (own GEMM; cuBLAS when linked)
// Usage: loraplex_gpu_bench [--quick] [--json=FILE] [--ctx=512]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "kernels.h"
#include "kernel_times.h"
#include "memory.h"
#ifdef LP_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

using namespace lp;
using namespace lp::cu;

namespace {

double now_ms() { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Times `fn` (device work on stream st) with events: median over reps after warm-up, in ms.
template <typename F> double time_device(F fn, int warm, int reps, cudaStream_t st) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  for (int i = 0; i < warm; i++) fn();
  std::vector<double> t;
  for (int i = 0; i < reps; i++) {
    check(cudaEventRecord(a, st), "event");
    fn();
    check(cudaEventRecord(b, st), "event");
    check(cudaEventSynchronize(b), "event");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "event");
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return median(t);
}

struct Shape { int vocab = 128256, hidden = 4096, inter = 14336, layers = 32, heads = 32, kv = 8, hd = 128; };

ModelSpec llama8b(const Shape& sh, int kv_blocks, int max_adapters, int lora_pages) {
  ModelSpec s;
  s.vocab = sh.vocab; s.hidden = sh.hidden; s.intermediate = sh.inter; s.layers = sh.layers; s.heads = sh.heads; s.kv_heads = sh.kv;
  s.head_dim = sh.hd; s.rms_eps = 1e-5f;
  for (int i = 0; i < sh.hd / 2; i++) s.inv_freq.push_back(std::pow(500000.f, -2.f * i / sh.hd));
  auto ref = [](int64_t r, int64_t c) { return WeightRef{nullptr, DType::BF16, r, c}; };
  s.embed = ref(sh.vocab, sh.hidden);
  s.lm_head = ref(sh.vocab, sh.hidden);
  s.final_norm = ref(1, sh.hidden);
  s.layer.resize(size_t(sh.layers));
  for (auto& L : s.layer)
    for (int m = 0; m < kNumModules; m++) L.proj[m] = ref(module_out(s, m), module_in(s, m));
  s.kv_blocks = kv_blocks; s.block_size = 16;
  s.max_adapters = max_adapters; s.max_rank = 16; s.lora_pages = lora_pages; s.lora_dtype = DType::BF16;
  s.random_weights = true; s.random_seed = 42;
  return s;
}

double weight_bytes(const ModelSpec& s) {  // every matrix a decode step reads (embedding: rows only)
  double per_layer = 0;
  for (int m = 0; m < kNumModules; m++) per_layer += double(module_in(s, m)) * module_out(s, m);
  return (per_layer * s.layers + double(s.vocab) * s.hidden) * 2;
}
double adapter_bytes(const ModelSpec& s, int rank) {
  double per_layer = 0;
  for (int m = 0; m < kNumModules; m++) per_layer += module_in(s, m) + module_out(s, m);
  return per_layer * rank * s.layers * 2;
}
double kv_bytes(const ModelSpec& s, double tokens) { return tokens * s.layers * 2 * s.kv_heads * s.head_dim * 2; }

AdapterSpec make_adapter(const ModelSpec& s, int rank) {
  AdapterSpec a;
  a.max_rank = rank;
  const size_t n = size_t(s.layers) * kNumModules;
  a.rank.assign(n, rank); a.scale.assign(n, 2.f); a.a.resize(n); a.b.resize(n);
  uint32_t x = 12345;
  auto rnd = [&] { x = x * 1664525u + 1013904223u; return (float(x >> 8) / 16777216.f - 0.5f) * 0.02f; };
  for (size_t i = 0; i < n; i++) {
    const int m = int(i % kNumModules);
    a.a[i].resize(size_t(rank) * module_in(s, m));
    a.b[i].resize(size_t(rank) * module_out(s, m));
    for (auto& v : a.a[i]) v = rnd();
    for (auto& v : a.b[i]) v = rnd();
  }
  return a;
}

// B decode sequences at context `ctx`, sequence i using slot slots[i]; advances one token per step.
struct DecodeBatch {
  int B, ctx, bps;
  std::vector<int> slot, last;
  SamplingParams sp;
  DecodeBatch(int b, int c, int steps, const std::vector<int>& slots, const SamplingParams& p)
      : B(b), ctx(c), bps((c + steps + 16) / 16), slot(slots), last(size_t(b), 1), sp(p) {}
  StepInput input(int k, int vocab) const {
    StepInput in;
    in.seg_offsets = {0}; in.block_offsets = {0}; in.hist_offsets = {0};
    for (int i = 0; i < B; i++) {
      in.tokens.push_back(last[size_t(i)] % vocab);
      in.positions.push_back(ctx + k);
      in.seg_offsets.push_back(i + 1);
      in.seg_slot.push_back(slot[size_t(i)]);
      for (int b = 0; b < bps; b++) in.block_table.push_back(i * bps + b);
      in.block_offsets.push_back(int(in.block_table.size()));
      in.seg_sample.push_back(1);
      in.seg_all_logits.push_back(0);
      SamplingParams p = sp;
      p.seed = 1000 + uint64_t(i);
      p.draw = k;
      in.sampling.push_back(p);
      in.hist_offsets.push_back(0);
      in.hist_generated_start.push_back(0);
      in.seg_mask.push_back(-1);
    }
    return in;
  }
};

// Median wall time of one decode step (upload, graph replay, sampling, download, sync), in ms.
double decode_ms(Backend& be, int B, int ctx, const std::vector<int>& slots, int vocab, int warm, int reps, const SamplingParams& sp = {}) {
  DecodeBatch db(B, ctx, warm + reps, slots, sp);
  StepOutput out;
  std::vector<double> t;
  for (int k = 0; k < warm + reps; k++) {
    StepInput in = db.input(k, vocab);
    const double t0 = now_ms();
    be.step(in, out);
    if (k >= warm) t.push_back(now_ms() - t0);
    for (int i = 0; i < B; i++) db.last[size_t(i)] = out.token[size_t(i)];
  }
  return median(t);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string json_path;
  int ctx = 512;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--quick") quick = true;
    else if (a.rfind("--json=", 0) == 0) json_path = a.substr(7);
    else if (a.rfind("--ctx=", 0) == 0) ctx = std::atoi(a.c_str() + 6);
  }
  if (cuda_device_count() <= 0) {
    std::printf("loraplex_gpu_bench: no CUDA device\n");
    return 77;
  }
  try {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "props");
    cudaStream_t st;
    check(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "stream");
    const int sms = prop.multiProcessorCount;
    std::string md;
    char line[512];
    auto out = [&](const char* f, auto... args) { std::snprintf(line, sizeof line, f, args...); md += line; std::fputs(line, stdout); std::fflush(stdout); };
    out("## CUDA backend on %s (sm_%d%d, %d SMs, %.0f GiB)\n\n", prop.name, prop.major, prop.minor, sms, double(prop.totalGlobalMem) / (1 << 30));

    // 1. Copy bandwidth.
    const size_t cbytes = size_t(2) << 30;
    double bw = 0;
    {
      DevBuf a(cbytes), b(cbytes);
      fill_random(Ty::F32, a.get(), cbytes / 4, 1, 0.f, 1.f, st);
      const double ms = time_device([&] { copy_bytes(b.get(), a.get(), cbytes, st); }, 3, 20, st);
      bw = 2.0 * double(cbytes) / (ms * 1e-3);
    }
    out("| measurement | value |\n|---|---|\n| device copy bandwidth (read + write) | %.0f GB/s |\n", bw / 1e9);

    // 2. Matrix rate: own GEMM (and cuBLAS when linked) on 8192^3 bf16.
    double own_tflops = 0, cublas_tflops = 0;
    {
      const int n = 8192;
      DevBuf x(size_t(n) * n * 2), w(size_t(n) * n * 2), y(size_t(n) * n * 4), ws(size_t(256) << 20), cnt(size_t(1) << 20);
      check(cudaMemset(cnt.get(), 0, cnt.bytes()), "memset");
      fill_random(Ty::BF16, x.get(), size_t(n) * n, 2, 0.f, 1.f, st);
      fill_random(Ty::BF16, w.get(), size_t(n) * n, 3, 0.f, 1.f, st);
      GemmArgs g;
      g.ty = Ty::BF16; g.x = x.get(); g.w = w.get(); g.y = y.get<float>(); g.ldy = n; g.M = n; g.N = n; g.K = n;
      const GemmScratch sc{ws.get<float>(), ws.bytes() / 4, cnt.get<int>(), int(cnt.bytes() / 4)};
      const double ms = time_device([&] { gemm(g, sc, sms, st); }, 2, 10, st);
      own_tflops = 2.0 * n * double(n) * n / (ms * 1e-3) / 1e12;
#ifdef LP_HAVE_CUBLAS
      cublasHandle_t h;
      cublasCreate(&h);
      cublasSetStream(h, st);
      const float one = 1.f, zero = 0.f;
      const double cms = time_device([&] {
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, w.get(), CUDA_R_16BF, n, x.get(), CUDA_R_16BF, n, &zero, y.get(), CUDA_R_32F, n,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      }, 2, 10, st);
      cublas_tflops = 2.0 * n * double(n) * n / (cms * 1e-3) / 1e12;
      cublasDestroy(h);
#endif
    }
    out("| matrix rate, own mma.sync GEMM, bf16 8192^3 | %.0f TFLOP/s |\n", own_tflops);
    if (cublas_tflops > 0) out("| matrix rate, cuBLAS bf16 8192^3 (reference) | %.0f TFLOP/s |\n", cublas_tflops);

    // The model: Llama-3-8B shapes, random bf16 weights generated on the device.
    const Shape sh;
    const int max_b = 64, steps = quick ? 10 : 30, warm = 4;
    const int bps = (ctx + warm + steps + 16) / 16;
    const int prefill_t = 2048;
    const int long_ctx = 2048, long_b = 32;
    const int kv_blocks = std::max({max_b * bps, (prefill_t + 16) / 16 * 2, long_b * ((long_ctx + warm + steps + 16) / 16)});
    const ModelSpec spec = llama8b(sh, kv_blocks, 64, 64 * 16);
    double t0 = now_ms();
    auto be = make_cuda_backend(spec);
    out("| model load (random bf16 weights generated on the GPU) | %.1f s, %.1f GiB allocated |\n\n", (now_ms() - t0) / 1e3,
        double(be->bytes_allocated()) / (1 << 30));
    const double wb = weight_bytes(spec), ab = adapter_bytes(spec, 16);

    // 3. Base decode against the floor.
    out("### Decode step time, base model, context %d\n\n| batch | step (ms) | floor (ms) | step / floor | tokens/s |\n|---|---|---|---|---|\n", ctx);
    std::vector<double> base_ms;
    for (int B : {1, 8, 32, 64}) {
      const double ms = decode_ms(*be, B, ctx, std::vector<int>(size_t(B), -1), spec.vocab, warm, steps);
      const double floor = (wb + kv_bytes(spec, double(B) * (ctx + warm + steps / 2))) / bw * 1e3;
      base_ms.push_back(ms);
      out("| %d | %.3f | %.3f | %.2fx | %.0f |\n", B, ms, floor, ms / floor, B / ms * 1e3);
    }

    // 3b. Per-kernel times of one decode step, batch 1 and 32.
    std::vector<KernelTime> ktimes[2];
    const TimeFn timer = [&](const std::function<void()>& fn) { return time_device(fn, 3, quick ? 10 : 30, st); };
    for (int i = 0; i < 2; i++) {
      const int B = i == 0 ? 1 : 32;
      out("\n### Kernels of one decode step, batch %d (one layer; x %d layers per step)\n\n| kernel | us | MB read | of copy bandwidth |\n|---|---|---|---|\n", B, spec.layers);
      const std::string rows = kernel_times(B, sms, bw, st, timer, ktimes[i]);
      out("%s", rows.c_str());
    }

    // 3c. Long context and sampled decoding.
    out("\n### Decode, context %d and sampled decoding (temperature 1, top_p 0.9)\n\n| batch | context | sampling | step (ms) | floor (ms) | step / floor |\n|---|---|---|---|---|---|\n", long_ctx);
    double long_ms[2] = {0, 0}, sampled_ms[2] = {0, 0};
    SamplingParams sampled;
    sampled.temperature = 1.f; sampled.top_p = 0.9f;
    for (int i = 0; i < 2; i++) {
      const int B = i == 0 ? 1 : long_b;
      long_ms[i] = decode_ms(*be, B, long_ctx, std::vector<int>(size_t(B), -1), spec.vocab, warm, steps);
      const double floor = (wb + kv_bytes(spec, double(B) * (long_ctx + warm + steps / 2))) / bw * 1e3;
      out("| %d | %d | greedy | %.3f | %.3f | %.2fx |\n", B, long_ctx, long_ms[i], floor, long_ms[i] / floor);
    }
    for (int i = 0; i < 2; i++) {
      const int B = i == 0 ? 1 : long_b;
      sampled_ms[i] = decode_ms(*be, B, ctx, std::vector<int>(size_t(B), -1), spec.vocab, warm, steps, sampled);
      const double floor = (wb + kv_bytes(spec, double(B) * (ctx + warm + steps / 2))) / bw * 1e3;
      out("| %d | %d | temperature 1, top_p 0.9 | %.3f | %.3f | %.2fx |\n", B, ctx, sampled_ms[i], floor, sampled_ms[i] / floor);
    }

    // 4. Adapters: load 64 distinct rank-16 adapters (all seven modules).
    const AdapterSpec ad = make_adapter(spec, 16);
    std::vector<double> load_ms;
    for (int slot = 0; slot < 64; slot++) {
      std::vector<int> pages;
      for (int j = 0; j < 16; j++) pages.push_back(slot * 16 + j);
      const double a0 = now_ms();
      be->write_adapter(slot, pages, ad);
      load_ms.push_back(now_ms() - a0);
    }
    out("\n| adapter upload, rank 16, all 7 modules (%.0f MB bf16) | %.1f ms median |\n\n", ab / 1e6, median(load_ms));
    out("### Decode throughput with distinct adapters (batch = adapters, rank 16, all modules)\n\n"
        "| adapters = batch | base tok/s | LoRA tok/s | LoRA / base | byte-floor ratio | vs floor ratio (goal >= 0.95) |\n|---|---|---|---|---|---|\n");
    const int bs_list[] = {1, 8, 32, 64};
    std::vector<double> lora_ms;
    for (int i = 0; i < 4; i++) {
      const int B = bs_list[i];
      std::vector<int> slots;
      for (int k = 0; k < B; k++) slots.push_back(k);
      const double ms = decode_ms(*be, B, ctx, slots, spec.vocab, warm, steps);
      const double kvb = kv_bytes(spec, double(B) * (ctx + warm + steps / 2));
      const double floor_ratio = (wb + kvb) / (wb + kvb + B * ab);
      const double ratio = base_ms[size_t(i)] / ms;
      lora_ms.push_back(ms);
      out("| %d | %.0f | %.0f | %.3f | %.3f | %.3f |\n", B, B / base_ms[size_t(i)] * 1e3, B / ms * 1e3, ratio, floor_ratio, ratio / floor_ratio);
    }

    // 5. Decode while adapters upload on another thread (the upload must not stall the batch).
    {
      std::vector<int> slots;
      for (int k = 0; k < 8; k++) slots.push_back(k);
      const double idle = decode_ms(*be, 8, ctx, slots, spec.vocab, warm, steps);
      be->clear_slot(63);
      std::atomic<bool> stop{false};
      std::thread loader([&] {
        std::vector<int> pages;
        for (int j = 0; j < 16; j++) pages.push_back(63 * 16 + j);
        while (!stop) {
          be->write_adapter(63, pages, ad);
          be->clear_slot(63);
        }
      });
      const double busy = decode_ms(*be, 8, ctx, slots, spec.vocab, warm, steps);
      stop = true;
      loader.join();
      be->write_adapter(63, std::vector<int>{63 * 16 + 0, 63 * 16 + 1, 63 * 16 + 2, 63 * 16 + 3, 63 * 16 + 4, 63 * 16 + 5, 63 * 16 + 6, 63 * 16 + 7,
                                             63 * 16 + 8, 63 * 16 + 9, 63 * 16 + 10, 63 * 16 + 11, 63 * 16 + 12, 63 * 16 + 13, 63 * 16 + 14, 63 * 16 + 15},
                        ad);
      out("\n| decode step, batch 8 with adapters: idle / while adapters upload | %.3f ms / %.3f ms (%.2fx) |\n", idle, busy, busy / idle);
    }

    // 6. Prefill.
    out("\n### Prefill, one %d-token prompt\n\n| variant | time (ms) | TFLOP/s | vs own GEMM rate | vs cuBLAS rate |\n|---|---|---|---|---|\n", prefill_t);
    double flops = 0;
    {
      double per_layer = 0;
      for (int m = 0; m < kNumModules; m++) per_layer += double(module_in(spec, m)) * module_out(spec, m);
      flops = 2.0 * prefill_t * per_layer * spec.layers + 2.0 * spec.hidden * spec.vocab;  // + one LM-head row
      flops += 4.0 * spec.heads * spec.head_dim * (double(prefill_t) * (prefill_t + 1) / 2) * spec.layers;  // causal attention
    }
    for (int slot : {-1, 0}) {
      StepInput in;
      for (int t = 0; t < prefill_t; t++) { in.tokens.push_back((t * 7919) % spec.vocab); in.positions.push_back(t); }
      in.seg_offsets = {0, prefill_t};
      in.seg_slot = {slot};
      in.block_offsets = {0};
      for (int b = 0; b < (prefill_t + 15) / 16; b++) in.block_table.push_back(b);
      in.block_offsets.push_back(int(in.block_table.size()));
      in.seg_sample = {1}; in.seg_all_logits = {0}; in.sampling = {SamplingParams{}};
      in.hist_offsets = {0, 0}; in.hist_generated_start = {0}; in.seg_mask = {-1};
      StepOutput o;
      std::vector<double> t;
      for (int k = 0; k < (quick ? 3 : 6); k++) {
        const double a0 = now_ms();
        be->step(in, o);
        if (k > 0) t.push_back(now_ms() - a0);
      }
      const double ms = median(t), tf = flops / (ms * 1e-3) / 1e12;
      if (cublas_tflops > 0) out("| %s | %.1f | %.0f | %.2f | %.2f |\n", slot < 0 ? "base" : "rank-16 adapter", ms, tf, tf / own_tflops, tf / cublas_tflops);
      else out("| %s | %.1f | %.0f | %.2f | n/a |\n", slot < 0 ? "base" : "rank-16 adapter", ms, tf, tf / own_tflops);
    }
    if (!json_path.empty()) {
      FILE* f = std::fopen(json_path.c_str(), "w");
      if (f) {
        std::fprintf(f, "{\"device\": \"%s\", \"copy_gbps\": %.1f, \"own_gemm_tflops\": %.1f, \"cublas_tflops\": %.1f, \"ctx\": %d, \"batches\": [1, 8, 32, 64], \"decode_ms\": [%.4f, %.4f, %.4f, %.4f], \"lora_decode_ms\": [%.4f, %.4f, %.4f, %.4f], ",
                     prop.name, bw / 1e9, own_tflops, cublas_tflops, ctx, base_ms[0], base_ms[1], base_ms[2], base_ms[3], lora_ms[0], lora_ms[1],
                     lora_ms[2], lora_ms[3]);
        std::fprintf(f, "\"long_ctx\": %d, \"long_ctx_batches\": [1, %d], \"long_ctx_decode_ms\": [%.4f, %.4f], \"sampled_batches\": [1, %d], \"sampled_decode_ms\": [%.4f, %.4f], \"kernels\": {",
                     long_ctx, long_b, long_ms[0], long_ms[1], long_b, sampled_ms[0], sampled_ms[1]);
        for (int i = 0; i < 2; i++) {
          std::fprintf(f, "%s\"batch_%d\": [", i ? ", " : "", i == 0 ? 1 : 32);
          for (size_t k = 0; k < ktimes[i].size(); k++)
            std::fprintf(f, "%s{\"kernel\": \"%s\", \"us\": %.2f, \"mb\": %.2f, \"pct_bw\": %.1f}", k ? ", " : "", ktimes[i][k].name.c_str(), ktimes[i][k].us,
                         ktimes[i][k].bytes / 1e6, ktimes[i][k].pct_of_copy_bw);
          std::fputs("]", f);
        }
        std::fputs("}, \"markdown\": ", f);
        std::fputc('"', f);
        for (char c : md) {
          if (c == '"' || c == '\\') std::fputc('\\', f);
          if (c == '\n') std::fputs("\\n", f);
          else std::fputc(c, f);
        }
        std::fputs("\"}\n", f);
        std::fclose(f);
      }
    }
    be.reset();
    cudaStreamDestroy(st);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
