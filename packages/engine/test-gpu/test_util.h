// Small harness for the CUDA kernel tests: random data, dtype rounding, device upload/download,
// NaN poisoning, error metrics and a result table. Every check draws fresh random inputs.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels.h"
#include "memory.h"

namespace lpt {

using lp::cu::DevBuf;
using lp::cu::Ty;

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ULL + 1) {}
  uint64_t next() {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    return s;
  }
  float uni() { return float(next() >> 40) * (1.0f / 16777216.0f); }         // [0, 1)
  float sym() { return 2.f * uni() - 1.f; }                                  // [-1, 1)
  float normal() { const float u = std::max(uni(), 1e-7f), v = uni(); return std::sqrt(-2.f * std::log(u)) * std::cos(6.2831853f * v); }
  int below(int n) { return int(next() % uint64_t(n)); }
};

inline const char* ty_name(Ty t) { return t == Ty::F32 ? "f32" : (t == Ty::F16 ? "f16" : "bf16"); }
inline lp::DType dtype_of(Ty t) { return t == Ty::F32 ? lp::DType::F32 : (t == Ty::F16 ? lp::DType::F16 : lp::DType::BF16); }

inline std::vector<float> randn(Rng& r, size_t n, float std) {
  std::vector<float> v(n);
  for (auto& x : v) x = r.normal() * std;
  return v;
}
// The value the device sees after storing v as type t.
inline float round_to(Ty t, float v) {
  if (t == Ty::F32) return v;
  return lp::cu::half_bits_to_f32(t == Ty::BF16 ? lp::cu::f32_to_bf16(v) : lp::cu::f32_to_f16(v), t == Ty::BF16);
}
inline void round_all(Ty t, std::vector<float>& v) {
  for (auto& x : v) x = round_to(t, x);
}
inline std::vector<uint8_t> to_bytes(Ty t, const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * lp::cu::ty_size(t));
  lp::cu::convert_host(v.data(), lp::DType::F32, b.data(), t, v.size());
  return b;
}
inline DevBuf upload_bytes(const void* p, size_t bytes) {
  DevBuf d(std::max<size_t>(bytes, 16));
  if (bytes) lp::cu::check(cudaMemcpy(d.get(), p, bytes, cudaMemcpyHostToDevice), "test upload");
  return d;
}
inline DevBuf upload(Ty t, const std::vector<float>& v) {
  const auto b = to_bytes(t, v);
  return upload_bytes(b.data(), b.size());
}
template <typename X> DevBuf upload_vec(const std::vector<X>& v) { return upload_bytes(v.data(), v.size() * sizeof(X)); }
inline std::vector<float> download(Ty t, const void* d, size_t n) {
  std::vector<uint8_t> b(n * lp::cu::ty_size(t));
  lp::cu::check(cudaDeviceSynchronize(), "test kernel");
  lp::cu::check(cudaMemcpy(b.data(), d, b.size(), cudaMemcpyDeviceToHost), "test download");
  std::vector<float> v(n);
  lp::cu::convert_host(b.data(), dtype_of(t), v.data(), Ty::F32, n);
  return v;
}
template <typename X> std::vector<X> download_vec(const void* d, size_t n) {
  std::vector<X> v(n);
  lp::cu::check(cudaDeviceSynchronize(), "test kernel");
  lp::cu::check(cudaMemcpy(v.data(), d, n * sizeof(X), cudaMemcpyDeviceToHost), "test download");
  return v;
}
// Fills a buffer with NaN (in its element type) so that any element a kernel skips shows up.
inline void poison(DevBuf& b, Ty t) {
  lp::cu::poison(b.get(), b.bytes() / 4, t == Ty::F32 ? 0x7fc00000u : (t == Ty::BF16 ? 0x7fc07fc0u : 0x7e007e00u), nullptr);
}

struct Err { double rel = 0, max_abs = 0; size_t nan = 0; };
inline Err compare(const std::vector<float>& got, const std::vector<float>& ref) {
  Err e;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    if (!std::isfinite(got[i])) { e.nan++; continue; }
    const double d = double(got[i]) - ref[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
    e.max_abs = std::max(e.max_abs, std::fabs(d));
  }
  e.rel = std::sqrt(num / std::max(den, 1e-30));
  return e;
}

struct Report {
  int passed = 0, failed = 0;
  std::vector<std::string> lines;
  // Records a comparison; passes when nothing is NaN/unwritten and the relative error is within tol.
  bool check(const std::string& name, const Err& e, double tol) {
    const bool ok = e.nan == 0 && e.rel <= tol;
    char buf[512];
    std::snprintf(buf, sizeof buf, "| %-58s | %9.2e | %9.2e | %8.1e | %5zu | %s |", name.c_str(), e.rel, e.max_abs, tol, e.nan, ok ? "ok" : "FAIL");
    lines.push_back(buf);
    std::printf("%s\n", buf);
    std::fflush(stdout);
    (ok ? passed : failed)++;
    return ok;
  }
  bool expect(const std::string& name, bool cond, const std::string& detail = "") {
    char buf[512];
    std::snprintf(buf, sizeof buf, "| %-58s | %-9s | %-9s | %-8s | %-5s | %s |", name.c_str(), "", "", "", "", cond ? "ok" : ("FAIL " + detail).c_str());
    lines.push_back(buf);
    std::printf("%s\n", buf);
    std::fflush(stdout);
    (cond ? passed : failed)++;
    return cond;
  }
};

// Relative-error bounds. Inputs are pre-rounded to the element type, so kernels that only
// accumulate in float differ from the float64/float32 reference by summation order; kernels that
// store a 16-bit result add that rounding.
inline double tol_accum(Ty t) { return t == Ty::F32 ? 2e-5 : 1e-4; }
inline double tol_store(Ty t) { return t == Ty::F32 ? 2e-5 : (t == Ty::BF16 ? 8e-3 : 1.5e-3); }

// --quick (the CPU emulator's run in CI): drops the slowest repetitions of a covered path.
inline bool& quick() { static bool q = false; return q; }

// Entry points of the two test files.
void kernel_tests(Report& rep, uint64_t seed);
void step_tests(Report& rep, uint64_t seed);

}  // namespace lpt
