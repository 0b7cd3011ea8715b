// The unnormalised sampling weight of a candidate, shared by the CPU sampler (scalar and AVX2) and
// the CUDA sampler so both draw from bit-identical weights: w = exp(z), z = (logit - max) / T <= 0 (see sample_z),
// as a float polynomial (Cephes expf) written with explicit fused multiply-adds, so no compiler
// contraction choice can change a bit. Exactly 1 at z = 0, exactly 0 below kMinSampleZ (and only
// there), about 2 ulp from exp elsewhere. The sampler sums weights in double.
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define LP_SAMPLE_HD __host__ __device__ __forceinline__
#else
#define LP_SAMPLE_HD inline
#endif

namespace lp {

constexpr float kMinSampleZ = -87.f;  // exp(-87) ~ 1.6e-38: still a normal float
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f, kExpP1 = 1.3981999507e-3f, kExpP2 = 8.3334519073e-3f,
                kExpP3 = 4.1665795894e-2f, kExpP4 = 1.6666665459e-1f, kExpP5 = 5.0000001201e-1f;

// z = (logit - max) * (1 / T), rounded as IEEE float subtraction then multiplication (a multiply
// instead of a divide per candidate); inv_temperature = 1.f / T, rounded once.
LP_SAMPLE_HD float sample_z(float logit, float max_logit, float inv_temperature) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(__fsub_rn(logit, max_logit), inv_temperature);
#else
  return (logit - max_logit) * inv_temperature;
#endif
}

LP_SAMPLE_HD float sample_weight(float z) {
  if (!(z >= kMinSampleZ)) return 0.f;
#ifdef __CUDA_ARCH__
  const float n = rintf(__fmul_rn(z, kLog2e));
#else
  const float n = std::rint(z * kLog2e);
#endif
  float r = fmaf(n, -kLn2Hi, z);
  r = fmaf(n, -kLn2Lo, r);
#ifdef __CUDA_ARCH__
  const float r2 = __fmul_rn(r, r);
#else
  const float r2 = r * r;
#endif
  float p = fmaf(kExpP0, r, kExpP1);
  p = fmaf(p, r, kExpP2);
  p = fmaf(p, r, kExpP3);
  p = fmaf(p, r, kExpP4);
  p = fmaf(p, r, kExpP5);
  float y = fmaf(p, r2, r);
#ifdef __CUDA_ARCH__
  y = __fadd_rn(y, 1.f);
  return __fmul_rn(y, __int_as_float((int(n) + 127) << 23));
#else
  y = y + 1.f;
  const uint32_t bits = uint32_t(int(n) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, 4);
  return y * scale;
#endif
}

}  // namespace lp
