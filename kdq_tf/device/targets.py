"""The boards the firmware runs on: the host, and four Cortex-M cores as QEMU 7.2 models them.

One table, read by build (tools), run (the QEMU command, instructions per SysTick tick) and the
linker-map shares (where RAM starts). The firmware Makefile holds the same facts for a build
without Python (compiler flags, board), and a test checks that the two agree.

Facts measured on Debian's qemu-system-arm 7.2 and read in its source (hw/arm/mps2.c,
mps2-tz.c, armsse.c):
- SysTick counts the core clock (the SSE boards wire no reference clock), and `-icount shift=0`
  runs one instruction per ns of virtual time, so one tick is 1e9 / SYSCLK instructions: 40 on
  the MPS2 boards (25 MHz), 50 on the AN505 (20 MHz), 31.25 on the AN547 (32 MHz). A 2 M
  instruction loop counted 50,000 / 50,000 / 40,000 / 64,000 ticks on AN386 / AN500 / AN505 /
  AN547.
- The AN505 and AN547 boot in Secure state, with the memory protection controllers letting only
  Secure accesses through: the linker scripts use the Secure aliases. The AN505 boots from its
  vector table at 0x10000000 (init-svtor), which must be where the image is linked.
"""

from dataclasses import dataclass

from kdq_tf.errors import KdqError


@dataclass(frozen=True)
class Target:
    name: str
    machine: str | None  # qemu-system-arm -M; None: runs natively
    board: str | None  # cortex_m/<board>.ld in the firmware folder
    cpu_flags: str  # what the Makefile compiles with
    ram_base: int  # where the board's linker script starts RAM (above: flash)
    insns_per_tick: float  # SysTick ticks -> instructions under -icount shift=0
    about: str  # for --help and errors


TARGETS = {
    t.name: t
    for t in (
        Target("host", None, None, "", 0, 0.0, "this machine, g++"),
        Target(
            "cortex-m4",
            "mps2-an386",
            "mps2_an386",
            "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16",
            0x20000000,
            40.0,
            "Cortex-M4F, the MPS2-AN386 under QEMU",
        ),
        Target(
            "cortex-m7",
            "mps2-an500",
            "mps2_an500",
            "-mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16",
            0x20000000,
            40.0,
            "Cortex-M7, the MPS2-AN500 under QEMU",
        ),
        Target(
            "cortex-m33",
            "mps2-an505",
            "mps2_an505",
            "-mcpu=cortex-m33 -mthumb -mfloat-abi=hard -mfpu=fpv5-sp-d16",
            0x38000000,
            50.0,
            "Cortex-M33, the MPS2-AN505 under QEMU (Secure state)",
        ),
        Target(
            "cortex-m55",
            "mps3-an547",
            "mps3_an547",
            "-mcpu=cortex-m55 -mthumb -mfloat-abi=hard",
            0x31000000,
            31.25,
            "Cortex-M55 with Helium (MVE), the MPS3-AN547 under QEMU (Secure state)",
        ),
    )
}
CORTEX_M = tuple(n for n in TARGETS if n != "host")


def target(name: str) -> Target:
    """The target called `name`; KdqError naming the choices otherwise."""
    if name not in TARGETS:
        raise KdqError(f"--target must be one of {', '.join(TARGETS)}, got {name!r}")
    return TARGETS[name]
