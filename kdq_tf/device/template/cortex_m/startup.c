/* Startup for the Arm MPS2/MPS3 boards QEMU models: mps2-an386 (Cortex-M4F), mps2-an500
 * (Cortex-M7), mps2-an505 (Cortex-M33) and mps3-an547 (Cortex-M55). The board's linker script
 * (<board>.ld) places the vector table where the core boots.
 *
 * Reset: copy .data from flash to RAM, zero .bss, enable the FPU (and on the M55 the Helium
 * vector unit, which shares its enable bits), run C++ constructors, call main, and exit through
 * semihosting with main's status (QEMU then exits with it).
 * On a real board keep this shape: take the vector table of your part (more IRQs), and
 * replace semihosting (initialise_monitor_handles, exit) with your UART retargeting. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __etext_data, __data_start__, __data_end__, __bss_start__, __bss_end__, __StackTop;
extern void __libc_init_array(void);
extern void initialise_monitor_handles(void);
extern int main(void);

volatile uint32_t g_kdq_systick_wraps = 0;

void Reset_Handler(void) {
  uint32_t* src = &__etext_data;
  for (uint32_t* dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
  /* CPACR: full access to CP10 and CP11, or the first float (or MVE) instruction faults. */
  *(volatile uint32_t*)0xE000ED88 |= (0xFu << 20);
  __asm volatile("dsb\n isb");
  initialise_monitor_handles();
  __libc_init_array();
  exit(main());
}

static void Fault_Handler(void) {
  /* Semihosting SYS_EXIT with ADP_Stopped_RunTimeErrorUnknown: QEMU stops with status 1. */
  __asm volatile("mov r0, #0x18\n ldr r1, =0x20023\n bkpt 0xab");
  for (;;) {
  }
}

void SysTick_Handler(void) { ++g_kdq_systick_wraps; }

typedef void (*vector_t)(void);
__attribute__((section(".vectors"), used)) const vector_t g_vectors[16] = {
    (vector_t)&__StackTop, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler,         0,             0,             0,             0,             Fault_Handler,
    Fault_Handler,         0,             Fault_Handler, SysTick_Handler,
};

/* newlib's C++ runtime asks for these; the firmware has no processes. */
void _init(void) {}
void _fini(void) {}
