// Between the emulator's runtime (runtime.cc) and its grid runner (scheduler.cc).
#pragma once
#include <functional>
#include <string>

#include "emu.h"

namespace lp_emu {

// Runs every block of a grid on the calling thread; returns "" or what went wrong.
std::string run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body);

}  // namespace lp_emu
