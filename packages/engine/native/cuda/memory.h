// RAII owners of device memory (cudaMalloc, never managed memory) and pinned host memory.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "../core/dtype.h"
#include "kernels.h"

namespace lp {
namespace cu {

// Where a buffer's memory comes from: device memory (cudaMalloc; out of memory is OUT_OF_MEMORY)
// or pinned host memory (cudaHostAlloc, for asynchronous copies).
struct DeviceMemory {
  static void* allocate(size_t bytes) {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw EngineFailure("OUT_OF_MEMORY", "cudaMalloc of " + std::to_string(bytes) + " bytes failed: " + cudaGetErrorString(e));
    }
    return p;
  }
  static void free(void* p) { cudaFree(p); }
};
struct PinnedMemory {
  static void* allocate(size_t bytes) {
    void* p = nullptr;
    check(cudaHostAlloc(&p, bytes, cudaHostAllocDefault), "cudaHostAlloc");
    return p;
  }
  static void free(void* p) { cudaFreeHost(p); }
};

// A move-only owner of `bytes` of memory from Source.
template <class Source>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t bytes) { alloc(bytes); }
  Buffer(Buffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) { release(); p_ = std::exchange(o.p_, nullptr); bytes_ = std::exchange(o.bytes_, 0); }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }
  void alloc(size_t bytes) {
    release();
    if (bytes == 0) return;
    p_ = Source::allocate(bytes);
    bytes_ = bytes;
  }
  void release() {
    if (p_) Source::free(p_);
    p_ = nullptr;
    bytes_ = 0;
  }
  template <typename T = void> T* get() const { return static_cast<T*>(p_); }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

using DevBuf = Buffer<DeviceMemory>;
using PinnedBuf = Buffer<PinnedMemory>;

// Host-side float <-> 16-bit conversions (round to nearest even), for uploads: native/core/dtype.h.
using lp::f32_to_bf16;
using lp::f32_to_f16;
using lp::half_bits_to_f32;
// Converts n elements of src (dtype from) into dst (dtype to); same dtype is a memcpy.
void convert_host(const void* src, DType from, void* dst, Ty to, size_t n);
inline Ty ty_of(DType d) { return d == DType::F32 ? Ty::F32 : (d == DType::F16 ? Ty::F16 : Ty::BF16); }

}  // namespace cu
}  // namespace lp
