// Inference timing. On Cortex-M, SysTick counts core clock ticks (24-bit, wraps counted by
// SysTick_Handler in cortex_m/startup.c). Under QEMU with -icount shift=0 every instruction
// advances virtual time by 1 ns, so ticks are proportional to instructions (kdq_tf converts them
// with the board's clock). The host build has no timer (use a profiler instead).
#ifndef KDQ_TIMER_H_
#define KDQ_TIMER_H_

#include <cstdint>

#if defined(__arm__) && defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
extern "C" volatile uint32_t g_kdq_systick_wraps;

namespace kdq_systick {
volatile uint32_t* const kCtrl = reinterpret_cast<volatile uint32_t*>(0xE000E010);
volatile uint32_t* const kLoad = reinterpret_cast<volatile uint32_t*>(0xE000E014);
volatile uint32_t* const kVal = reinterpret_cast<volatile uint32_t*>(0xE000E018);
constexpr uint32_t kReload = 0xFFFFFF;
}  // namespace kdq_systick

inline void kdq_timer_init() {
  *kdq_systick::kLoad = kdq_systick::kReload;
  *kdq_systick::kVal = 0;
  *kdq_systick::kCtrl = 7;  // enable, interrupt on wrap, core clock
}

inline uint64_t kdq_timer_ticks() {
  uint32_t wraps, val;
  do {  // a wrap between the two reads would pair an old count with a new value
    wraps = g_kdq_systick_wraps;
    val = *kdq_systick::kVal;
  } while (wraps != g_kdq_systick_wraps);
  return (static_cast<uint64_t>(wraps) << 24) + (kdq_systick::kReload - val);
}

inline bool kdq_timer_available() { return true; }
#else
inline void kdq_timer_init() {}
inline uint64_t kdq_timer_ticks() { return 0; }
inline bool kdq_timer_available() { return false; }
#endif

#endif  // KDQ_TIMER_H_
