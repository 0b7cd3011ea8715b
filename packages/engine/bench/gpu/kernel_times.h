// Per-kernel times of one decode step (kernel_times.cc), for loraplex_gpu_bench.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "kernels.h"

namespace lp {
namespace cu {

struct KernelTime { std::string name; double us, bytes, pct_of_copy_bw; };
// Runs fn (device work on the bench's stream) and returns its median time in ms.
using TimeFn = std::function<double(const std::function<void()>&)>;
// Markdown rows "| kernel | us | MB read | % of copy bandwidth |" for batch B; appends to rows.
std::string kernel_times(int B, int sms, double bw, cudaStream_t st, const TimeFn& time_device, std::vector<KernelTime>& rows);

}  // namespace cu
}  // namespace lp
