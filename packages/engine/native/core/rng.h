// The counter-based RNG every sampler draws from: splitmix64 over (seed, draw), so that a seed gives
// the same tokens whatever else shares the batch, on every backend (the CPU sampler and the CUDA
// sampling kernel call these very functions).
#pragma once
#include <cstdint>

#include "host_device.h"

namespace lp {

LP_HOST_DEVICE uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Multiplier spreading a counter over the 64 bits before it is mixed with a seed.
constexpr uint64_t kCounterSpread = 0xd1b54a32d192ed03ULL;

// A uniform double in [0, 1) from (seed, draw).
LP_HOST_DEVICE double uniform01(uint64_t seed, uint64_t draw) {
  const uint64_t r = splitmix64(splitmix64(seed) ^ (draw * kCounterSpread));
  return double(r >> 11) * (1.0 / 9007199254740992.0);
}

}  // namespace lp
