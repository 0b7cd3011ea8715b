// LP_HOST_DEVICE marks the small inline functions of native/core/ that the CUDA kernels call too:
// __host__ __device__ under nvcc, nothing for the host compiler (the CPU backend, the binding and
// the CUDA sources compiled as host C++ on the emulator, native/cuda/emu/).
#pragma once

#if defined(__CUDACC__)
#define LP_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LP_HOST_DEVICE inline
#endif
