// The emulator's CUDA runtime: the part of the cudart C API the backend, its kernel tests and the
// benchmark call, implemented on host memory. One emulated device; every stream operation runs
// when it is issued (under one lock, so stream order holds trivially), except on a capturing stream,
// where it is recorded into the graph and runs at each cudaGraphLaunch, reading its arguments and
// host buffers then, as a replayed CUDA graph does.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "emu.h"
#include "runtime_state.h"

struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};
struct CUstream_st {
  unsigned flags = 0;
  CUgraph_st* capture = nullptr;  // non-null while capturing
  bool invalidated = false;       // an unsupported call happened during the capture
};
struct CUevent_st {
  std::chrono::steady_clock::time_point at{};
};

namespace lp_emu {
namespace {

std::recursive_mutex g_mu;                 // the one device: one operation at a time
std::map<uintptr_t, size_t> g_device;      // device allocations: base -> bytes
std::map<const void*, int> g_max_dyn_smem; // cudaFuncAttributeMaxDynamicSharedMemorySize per kernel
cudaError_t g_sticky = cudaSuccess;        // a failed kernel poisons the context, as on a GPU
thread_local cudaError_t t_last = cudaSuccess;
thread_local int t_capturing = 0;          // captures begun by this thread (ThreadLocal mode)

constexpr int kDefaultSmem = 48 << 10, kMaxSmemOptin = 227 << 10;

cudaError_t fail(cudaError_t e, const std::string& why) {
  std::fprintf(stderr, "[cuda-emu] %s: %s\n", cudaGetErrorName(e), why.c_str());
  t_last = e;
  return e;
}

int env_int(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : dflt;
}

// Whether [p, p + n) lies inside one device allocation.
bool in_device(const void* p, size_t n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = g_device.upper_bound(a);
  if (it == g_device.begin()) return false;
  --it;
  return a >= it->first && a + n <= it->first + it->second;
}

cudaError_t check_copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (n == 0) return cudaSuccess;
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (dst_dev && !in_device(dst, n)) return fail(cudaErrorInvalidValue, "copy of " + std::to_string(n) + " bytes to memory outside every device allocation");
  if (src_dev && !in_device(src, n)) return fail(cudaErrorInvalidValue, "copy of " + std::to_string(n) + " bytes from memory outside every device allocation");
  if (kind == cudaMemcpyHostToDevice && in_device(src, n)) return fail(cudaErrorInvalidValue, "host-to-device copy from device memory");
  if (kind == cudaMemcpyDeviceToHost && in_device(dst, n)) return fail(cudaErrorInvalidValue, "device-to-host copy into device memory");
  return cudaSuccess;
}

// Issues op on stream: records it when the stream captures, else runs it now.
cudaError_t issue(cudaStream_t s, std::function<void()> op) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  if (g_sticky != cudaSuccess) return g_sticky;
  if (s && s->capture) {
    s->capture->ops.push_back(std::move(op));
    return cudaSuccess;
  }
  op();
  return g_sticky;
}

// A synchronous call made while this thread captures is illegal in the capture modes we use.
cudaError_t no_capture(const char* what) {
  if (t_capturing > 0) return fail(cudaErrorStreamCaptureImplicit, std::string(what) + " during a stream capture");
  return cudaSuccess;
}

}  // namespace

void launch(const void* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, std::function<void()> body) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  std::string bad;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) bad = "empty grid";
  else if (grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u) bad = "grid too large";
  else if (threads == 0 || threads > 1024 || block.z > 64) bad = "block of " + std::to_string(threads) + " threads";
  else {
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    auto it = g_max_dyn_smem.find(kernel);
    const int limit = it == g_max_dyn_smem.end() ? kDefaultSmem : it->second;
    if (smem > size_t(limit)) bad = std::to_string(smem) + " bytes of dynamic shared memory over the kernel's limit of " + std::to_string(limit);
  }
  if (!bad.empty()) {
    fail(cudaErrorInvalidConfiguration, "launch (" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," + std::to_string(grid.z) +
                                            ") x (" + std::to_string(block.x) + "," + std::to_string(block.y) + "): " + bad);
    return;
  }
  auto run = std::make_shared<std::function<void()>>(std::move(body));
  const cudaError_t e = issue(stream, [grid, block, smem, run]() {
    const std::string err = run_grid(grid, block, smem, *run);
    if (!err.empty()) {
      std::fprintf(stderr, "[cuda-emu] kernel failed: %s\n", err.c_str());
      g_sticky = cudaErrorLaunchFailure;
    }
  });
  if (e != cudaSuccess) t_last = e;
}

}  // namespace lp_emu

using namespace lp_emu;

extern "C" {

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    default: return "cudaError (emulator)";
  }
}
const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = t_last != cudaSuccess ? t_last : g_sticky;
  t_last = cudaSuccess;
  return e;
}

cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice, "device " + std::to_string(d)); }
cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }

// The emulated device looks like a small Hopper part: LORAPLEX_EMU_SMS multiprocessors (default 8,
// few enough that split-K and split-context paths are exercised on small shapes).
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return fail(cudaErrorInvalidDevice, "device " + std::to_string(d));
  std::memset(p, 0, sizeof *p);
  std::snprintf(p->name, sizeof p->name, "loraplex CUDA emulator (CPU)");
  p->major = 9; p->minor = 0;
  p->multiProcessorCount = env_int("LORAPLEX_EMU_SMS", 8);
  p->totalGlobalMem = size_t(16) << 30;
  p->sharedMemPerBlock = kDefaultSmem;
  p->sharedMemPerBlockOptin = kMaxSmemOptin;
  p->maxThreadsPerBlock = 1024;
  p->warpSize = 32;
  p->l2CacheSize = 50 << 20;
  p->maxThreadsPerMultiProcessor = 2048;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
  cudaDeviceProp p;
  const cudaError_t e = cudaGetDeviceProperties(&p, d);
  if (e != cudaSuccess) return e;
  switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = p.multiProcessorCount; break;
    default: return fail(cudaErrorInvalidValue, "device attribute " + std::to_string(int(a)));
  }
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* f, cudaFuncAttribute a, int v) {
  if (a != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaSuccess;
  if (v < 0 || v > kMaxSmemOptin) return fail(cudaErrorInvalidValue, "dynamic shared memory limit " + std::to_string(v));
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  g_max_dyn_smem[f] = v;
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t n) {
  if (cudaError_t e = no_capture("cudaMalloc")) return e;
  if (n > (size_t(64) << 30)) return fail(cudaErrorMemoryAllocation, std::to_string(n) + " bytes");
  void* m = nullptr;
  if (posix_memalign(&m, 256, std::max<size_t>(n, 1)) != 0) return fail(cudaErrorMemoryAllocation, std::to_string(n) + " bytes");
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  g_device[reinterpret_cast<uintptr_t>(m)] = n;
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  auto it = g_device.find(reinterpret_cast<uintptr_t>(p));
  if (it == g_device.end()) return fail(cudaErrorInvalidValue, "cudaFree of a pointer cudaMalloc did not return");
  g_device.erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned int) {
  void* m = nullptr;
  if (posix_memalign(&m, 64, std::max<size_t>(n, 1)) != 0) return fail(cudaErrorMemoryAllocation, std::to_string(n) + " pinned bytes");
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaFreeHost(void* p) { std::free(p); return cudaSuccess; }

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
  {
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (cudaError_t e = check_copy(dst, src, n, kind)) return e;
  }
  return issue(s, [dst, src, n]() { if (n) std::memmove(dst, src, n); });
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  if (cudaError_t e = no_capture("cudaMemcpy")) return e;
  return cudaMemcpyAsync(dst, src, n, kind, nullptr);
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s) {
  {
    std::lock_guard<std::recursive_mutex> lock(g_mu);
    if (n && !in_device(p, n)) return fail(cudaErrorInvalidValue, "memset outside every device allocation");
  }
  return issue(s, [p, v, n]() { std::memset(p, v, n); });
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  if (cudaError_t e = no_capture("cudaMemset")) return e;
  return cudaMemsetAsync(p, v, n, nullptr);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  *s = new CUstream_st();
  (*s)->flags = flags;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) { delete s; return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (s && s->capture) { s->invalidated = true; return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamSynchronize on a capturing stream"); }
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  return g_sticky;
}
cudaError_t cudaDeviceSynchronize(void) {
  if (cudaError_t e = no_capture("cudaDeviceSynchronize")) return e;
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  return g_sticky;
}

cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new CUevent_st(); return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  return issue(s, [e]() { e->at = std::chrono::steady_clock::now(); });
}
cudaError_t cudaEventSynchronize(cudaEvent_t) {
  std::lock_guard<std::recursive_mutex> lock(g_mu);
  return g_sticky;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
  if (!s) return fail(cudaErrorStreamCaptureUnsupported, "capture of the legacy stream");
  if (s->capture) return fail(cudaErrorIllegalState, "stream already capturing");
  s->capture = new CUgraph_st();
  s->invalidated = false;
  t_capturing++;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* g) {
  if (!s || !s->capture) return fail(cudaErrorIllegalState, "stream not capturing");
  t_capturing--;
  CUgraph_st* graph = s->capture;
  s->capture = nullptr;
  if (s->invalidated) {
    delete graph;
    *g = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated, "an unsupported call happened during the capture");
  }
  *g = graph;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* x, cudaGraph_t g, unsigned long long) {
  if (!g) return fail(cudaErrorInvalidValue, "null graph");
  *x = new CUgraphExec_st{g->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t s) {
  if (!x) return fail(cudaErrorInvalidValue, "null graph exec");
  for (auto& op : x->ops)
    if (cudaError_t e = issue(s, op)) return e;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) { delete g; return cudaSuccess; }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) { delete x; return cudaSuccess; }

}  // extern "C"
