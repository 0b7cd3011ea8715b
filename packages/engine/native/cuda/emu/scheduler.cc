// The emulator's grid runner: each block's threads are fibers (ucontext) run round-robin on the
// calling OS thread; a fiber runs until it reaches a barrier (block or warp) and every barrier
// opens once all live threads of its scope have arrived. Exited threads count as arrived, as on
// Volta and later. No thread ready while some wait is a deadlock: the launch fails.
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "emu.h"
#include "memory.h"
#include "runtime_state.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define LP_EMU_ASAN 1
#endif
// On x86-64 a fiber switch saves the six callee-saved registers and swaps stacks (a few ns);
// elsewhere, and under AddressSanitizer, ucontext (a system call per switch) does it.
#if defined(__x86_64__) && !defined(LP_EMU_ASAN)
#define LP_EMU_FAST_SWITCH 1
extern "C" void lp_emu_switch(void** save_sp, void* to_sp);
asm(R"(
  .text
  .globl lp_emu_switch
  .type lp_emu_switch, @function
lp_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size lp_emu_switch, .-lp_emu_switch
)");
#endif

namespace lp_emu {
namespace {

#if LP_EMU_ASAN
constexpr size_t kStackBytes = 512 << 10;
#else
constexpr size_t kStackBytes = 128 << 10;
#endif

enum class St { Ready, WaitBlock, WaitWarp, Done };

struct Fiber {
  ucontext_t ctx;
  void* sp = nullptr;  // saved stack pointer (fast switch)
  char* stack = nullptr;
  uint3 tid;
  int lin = 0, warp = 0;
  St st = St::Ready;
  uint32_t block_phase = 0, warp_phase = 0;  // collectives this thread has entered
};

struct Block {
  std::vector<Fiber> fibers;
  ucontext_t sched;
  void* sched_sp = nullptr;
  const std::function<void()>* body = nullptr;
  Fiber* cur = nullptr;
  uint3 bid;
  dim3 bdim, gdim;
  int live = 0, block_arrived = 0;
  std::vector<int> warp_live, warp_arrived;
  std::vector<unsigned char> warp_slots;  // [warps][2 phases][32 lanes][kSlotBytes]
  std::vector<uint32_t> warp_stamp;       // [warps][2][32]: phase + 1 of the lane's last deposit
  std::vector<int> or_slots;              // [2][threads]
  std::vector<float> mma_out;             // [warps][2][16 x 8] products of the warp's last mma
  std::vector<uint32_t> mma_stamp;        // [warps][2]: warp phase the product belongs to
  std::vector<unsigned char> smem;
  std::string error;
#if LP_EMU_ASAN
  void* fake_stack = nullptr;
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
#endif
};

thread_local Block* g_block = nullptr;
std::vector<char*> g_stacks;  // reused between launches (launches are serialised)

Fiber& me() { return *g_block->cur; }

void switch_to(ucontext_t* from, ucontext_t* to, const void* to_bottom, size_t to_size) {
#if LP_EMU_ASAN
  void* save = nullptr;
  __sanitizer_start_switch_fiber(&save, to_bottom, to_size);
  swapcontext(from, to);
  __sanitizer_finish_switch_fiber(save, nullptr, nullptr);
#else
  (void)to_bottom; (void)to_size;
  swapcontext(from, to);
#endif
}

// From a fiber back to the scheduler.
void yield() {
  Block& b = *g_block;
#if LP_EMU_FAST_SWITCH
  lp_emu_switch(&me().sp, b.sched_sp);
#elif LP_EMU_ASAN
  switch_to(&me().ctx, &b.sched, b.sched_bottom, b.sched_size);
#else
  switch_to(&me().ctx, &b.sched, nullptr, 0);
#endif
}

void release_block(Block& b) {
  b.block_arrived = 0;
  for (Fiber& f : b.fibers)
    if (f.st == St::WaitBlock) f.st = St::Ready;
}
void release_warp(Block& b, int w) {
  b.warp_arrived[size_t(w)] = 0;
  for (Fiber& f : b.fibers)
    if (f.st == St::WaitWarp && f.warp == w) f.st = St::Ready;
}

void arrive_block() {
  Block& b = *g_block;
  if (++b.block_arrived == b.live) { release_block(b); return; }
  me().st = St::WaitBlock;
  yield();
}
void arrive_warp() {
  Block& b = *g_block;
  const int w = me().warp;
  if (++b.warp_arrived[size_t(w)] == b.warp_live[size_t(w)]) { release_warp(b, w); return; }
  me().st = St::WaitWarp;
  yield();
}

void fiber_main() {
  Block& b = *g_block;
#if LP_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.sched_bottom, &b.sched_size);
#endif
  (*b.body)();
  Fiber& f = me();
  f.st = St::Done;
  b.live--;
  const int w = f.warp;
  b.warp_live[size_t(w)]--;
  if (b.block_arrived > 0 && b.block_arrived == b.live) release_block(b);
  if (b.warp_arrived[size_t(w)] > 0 && b.warp_arrived[size_t(w)] == b.warp_live[size_t(w)]) release_warp(b, w);
#if LP_EMU_ASAN
  __sanitizer_start_switch_fiber(nullptr, b.sched_bottom, b.sched_size);
#endif
#if LP_EMU_FAST_SWITCH
  lp_emu_switch(&f.sp, b.sched_sp);  // never resumed
  std::abort();
#endif
  // uc_link returns to the scheduler.
}

}  // namespace

const uint3& thread_idx() { return me().tid; }
const uint3& block_idx() { return g_block->bid; }
const dim3& block_dim() { return g_block->bdim; }
const dim3& grid_dim() { return g_block->gdim; }
void* dyn_smem() { return g_block->smem.data(); }

void sync_block() {
  me().block_phase++;
  arrive_block();
}

int sync_block_or(int pred) {
  Block& b = *g_block;
  Fiber& f = me();
  const size_t n = b.fibers.size(), ph = f.block_phase++ & 1;
  b.or_slots[ph * n + size_t(f.lin)] = pred ? 1 : 0;
  arrive_block();
  int any = 0;
  for (size_t i = 0; i < n; i++) any |= b.or_slots[ph * n + i];
  return any;
}

const unsigned char* warp_gather(const void* mine, size_t bytes) {
  Block& b = *g_block;
  Fiber& f = me();
  const size_t ph = f.warp_phase++ & 1, lane = size_t(f.lin & 31), w = size_t(f.warp);
  unsigned char* base = b.warp_slots.data() + (w * 2 + ph) * 32 * kSlotBytes;
  std::memcpy(base + lane * kSlotBytes, mine, bytes);
  b.warp_stamp[(w * 2 + ph) * 32 + lane] = f.warp_phase;
  arrive_warp();
  return base;
}

void check_lane_live(int lane) {
  Block& b = *g_block;
  Fiber& f = me();
  const size_t ph = (f.warp_phase - 1) & 1, w = size_t(f.warp);
  if (lane < 0 || lane > 31 || b.warp_stamp[(w * 2 + ph) * 32 + size_t(lane)] != f.warp_phase) {
    if (b.error.empty())
      b.error = "warp exchange with lane " + std::to_string(lane) + " that did not take part (exited or diverged), thread " +
                std::to_string(f.lin);
  }
}

void ldmatrix_x4(uint32_t r[4], const void* smem_row, bool trans) {
  const int lane = int(me().lin & 31);
  const unsigned char* all = warp_gather(&smem_row, sizeof(void*));
  auto row = [&](int src) {
    check_lane_live(src);
    const void* p;
    std::memcpy(&p, all + src * kSlotBytes, sizeof p);
    return static_cast<const uint16_t*>(p);
  };
  const int g = lane >> 2, q = lane & 3;
  for (int i = 0; i < 4; i++) {
    uint16_t lo, hi;
    if (!trans) {
      const uint16_t* rp = row(i * 8 + g);
      lo = rp[2 * q]; hi = rp[2 * q + 1];
    } else {
      lo = row(i * 8 + 2 * q)[g];
      hi = row(i * 8 + 2 * q + 1)[g];
    }
    r[i] = uint32_t(lo) | (uint32_t(hi) << 16);
  }
}


// m16n8k16, row.col: lane (g = lane/4, q = lane%4) holds A rows g and g+8, k pairs {2q, 2q+1} and
// {2q+8, 2q+9} (registers a0: row g k lo, a1: row g+8 k lo, a2: row g k hi, a3: row g+8 k hi), B
// column g with the same k pairs (b0 lo, b1 hi), and C rows g, g+8, columns 2q, 2q+1.
void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1, bool bf16) {
  Block& b = *g_block;
  Fiber& f = me();
  uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  const unsigned char* all = warp_gather(mine, sizeof mine);
  // The first lane to resume multiplies for the whole warp; the others read their elements.
  const size_t slot = size_t(f.warp) * 2 + ((f.warp_phase - 1) & 1);
  float* P = b.mma_out.data() + slot * 128;
  if (b.mma_stamp[slot] != f.warp_phase) {
    b.mma_stamp[slot] = f.warp_phase;
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
      check_lane_live(l);
      uint32_t v[6];
      std::memcpy(v, all + l * kSlotBytes, sizeof v);
      const int g = l >> 2, q = l & 3;
      for (int half = 0; half < 2; half++) {
        const int sh = 16 * half;
        A[g][2 * q + half] = lp::cu::half_bits_to_f32(uint16_t(v[0] >> sh), bf16);
        A[g + 8][2 * q + half] = lp::cu::half_bits_to_f32(uint16_t(v[1] >> sh), bf16);
        A[g][2 * q + 8 + half] = lp::cu::half_bits_to_f32(uint16_t(v[2] >> sh), bf16);
        A[g + 8][2 * q + 8 + half] = lp::cu::half_bits_to_f32(uint16_t(v[3] >> sh), bf16);
        B[2 * q + half][g] = lp::cu::half_bits_to_f32(uint16_t(v[4] >> sh), bf16);
        B[2 * q + 8 + half][g] = lp::cu::half_bits_to_f32(uint16_t(v[5] >> sh), bf16);
      }
    }
    for (int row = 0; row < 16; row++)
      for (int col = 0; col < 8; col++) {
        float s = 0.f;
        for (int k = 0; k < 16; k++) s += A[row][k] * B[k][col];
        P[row * 8 + col] = s;
      }
  }
  const int lane = f.lin & 31, g = lane >> 2, q = lane & 3;
  for (int e = 0; e < 4; e++) c[e] += P[(g + (e >> 1) * 8) * 8 + 2 * q + (e & 1)];
}

// Runs every block of the grid; returns an error text ("" when the launch completed).
std::string run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  const int n = int(block.x * block.y * block.z), warps = (n + 31) / 32;
  Block b;
  b.body = &body;
  b.bdim = block;
  b.gdim = grid;
  b.fibers.resize(size_t(n));
  b.warp_live.assign(size_t(warps), 0);
  b.warp_arrived.assign(size_t(warps), 0);
  b.warp_slots.assign(size_t(warps) * 2 * 32 * kSlotBytes, 0);
  b.warp_stamp.assign(size_t(warps) * 2 * 32, 0);
  b.or_slots.assign(2 * size_t(n), 0);
  b.mma_out.assign(size_t(warps) * 2 * 128, 0.f);
  b.mma_stamp.assign(size_t(warps) * 2, 0);
  while (g_stacks.size() < size_t(n)) g_stacks.push_back(static_cast<char*>(std::malloc(kStackBytes)));
  Block* saved = g_block;
  g_block = &b;
  for (unsigned z = 0; z < grid.z && b.error.empty(); z++)
    for (unsigned y = 0; y < grid.y && b.error.empty(); y++)
      for (unsigned x = 0; x < grid.x && b.error.empty(); x++) {
        b.bid = make_uint3(x, y, z);
        // Dynamic shared memory starts as NaN bytes, as garbage on a GPU would be (but findable).
        b.smem.assign(std::max<size_t>(smem, 16), 0xff);
        b.live = n;
        b.block_arrived = 0;
        for (int w = 0; w < warps; w++) {
          b.warp_live[size_t(w)] = std::min(32, n - 32 * w);
          b.warp_arrived[size_t(w)] = 0;
        }
        std::fill(b.warp_stamp.begin(), b.warp_stamp.end(), 0u);
        std::fill(b.mma_stamp.begin(), b.mma_stamp.end(), 0u);
        for (int i = 0; i < n; i++) {
          Fiber& f = b.fibers[size_t(i)];
          f.lin = i;
          f.tid = make_uint3(unsigned(i) % block.x, (unsigned(i) / block.x) % block.y, unsigned(i) / (block.x * block.y));
          f.warp = i / 32;
          f.st = St::Ready;
          f.block_phase = f.warp_phase = 0;
          f.stack = g_stacks[size_t(i)];
#if LP_EMU_FAST_SWITCH
          // A fresh stack that "returns" into fiber_main with the alignment of a function entry.
          void** sp = reinterpret_cast<void**>((reinterpret_cast<uintptr_t>(f.stack) + kStackBytes) & ~uintptr_t(15));
          *--sp = nullptr;
          *--sp = reinterpret_cast<void*>(&fiber_main);
          for (int r = 0; r < 6; r++) *--sp = nullptr;
          f.sp = sp;
#else
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = f.stack;
          f.ctx.uc_stack.ss_size = kStackBytes;
          f.ctx.uc_link = &b.sched;
          makecontext(&f.ctx, fiber_main, 0);
#endif
        }
        int done = 0;
        while (done < n && b.error.empty()) {
          bool ran = false;
          done = 0;
          for (Fiber& f : b.fibers) {
            if (f.st == St::Ready) {
              b.cur = &f;
#if LP_EMU_FAST_SWITCH
              lp_emu_switch(&b.sched_sp, f.sp);
#else
              switch_to(&b.sched, &f.ctx, f.stack, kStackBytes);
#endif
              ran = true;
            }
            if (f.st == St::Done) done++;
          }
          if (!ran && done < n) {
            int wb = 0, ww = 0;
            for (Fiber& f : b.fibers) { wb += f.st == St::WaitBlock; ww += f.st == St::WaitWarp; }
            b.error = "deadlock in block (" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + "): " +
                      std::to_string(wb) + " threads wait at __syncthreads, " + std::to_string(ww) + " at a warp collective, " +
                      std::to_string(n - done - wb - ww) + " elsewhere";
          }
        }
      }
  g_block = saved;
  return b.error;
}

}  // namespace lp_emu
