"""Builds an exported firmware folder against TFLite-Micro, for the host or a Cortex-M board.

The firmware's own Makefile is the one build: this module checks the tools and the tree,
names a shared object cache, runs `make`, and times it. A user without Python runs the
same `make` by hand (the firmware README shows how).
"""

import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kdq_tf.device import tflm_tree
from kdq_tf.device.targets import TARGETS
from kdq_tf.errors import KdqError

log = logging.getLogger(__name__)

KERNELS = ("reference", "cmsis-nn")
# What each tool is, and the Debian packages that provide it.
_TOOLS = {
    "make": "make",
    "g++": "g++",
    "gcc": "gcc",
    "arm-none-eabi-g++": "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "arm-none-eabi-nm": "binutils-arm-none-eabi",
    "size": "binutils",
    "nm": "binutils",
    "qemu-system-arm": "qemu-system-arm",
}
_HOST_BUILD, _ARM_BUILD = ("make", "gcc", "g++"), ("make", "arm-none-eabi-g++")
# Running also measures the image (size, nm).
_HOST_RUN, _ARM_RUN = ("size", "nm"), ("qemu-system-arm", "arm-none-eabi-size", "arm-none-eabi-nm")


@dataclass(frozen=True)
class BuildOptions:
    target: str = "host"
    kernels: str = "reference"
    tflm: str | None = None  # the TFLM tree; None: $TFLM_DIR
    jobs: int | None = None  # make -j; None: the CPU count
    cache: str | None = None  # object cache root; None: $KDQ_TF_CACHE or ~/.cache/kdq_tf
    profile: bool = False  # main.cc times each operator (profiler.h); its own build folder

    def __post_init__(self):
        if self.target not in TARGETS:
            raise KdqError(f"--target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.kernels not in KERNELS:
            raise KdqError(f"--kernels must be one of {', '.join(KERNELS)}, got {self.kernels!r}")
        if self.jobs is not None and self.jobs < 1:
            raise KdqError(f"--jobs must be >= 1, got {self.jobs}")


def check_tools(target: str, run: bool = False) -> None:
    """Raises KdqError naming the first missing tool and the Debian packages to install."""
    arm = target != "host"
    needed = (_ARM_RUN if arm else _HOST_RUN) if run else (_ARM_BUILD if arm else _HOST_BUILD)
    missing = [t for t in needed if shutil.which(t) is None]
    if arm and not missing and not run:
        # The compiler alone is not enough: printf/exit come from newlib's semihosting (rdimon).
        spec = subprocess.run(
            ["arm-none-eabi-gcc", "-print-file-name=rdimon.specs"],
            capture_output=True,
            check=False,
            text=True,
        ).stdout.strip()
        if not os.path.isabs(spec):
            missing = ["arm-none-eabi-g++"]
    if missing:
        tool = missing[0]
        raise KdqError(
            f"{tool} not found: the {target} {'run' if run else 'build'} needs it; install it with "
            f"`apt-get install {_TOOLS[tool]}`"
        )
    if arm:
        why = _unsupported(target, run)
        if why:
            raise KdqError(why)


@functools.cache
def _unsupported(target: str, run: bool) -> str | None:
    """Why this machine's compiler (build) or QEMU (run) cannot do `target`, or None. Older
    toolchains lack -mcpu=cortex-m55, and QEMU before 6.0 lacks the AN547."""
    t = TARGETS[target]
    if run:
        machines = subprocess.run(
            ["qemu-system-arm", "-M", "help"], capture_output=True, check=False, text=True
        ).stdout.split()
        if t.machine not in machines:
            return (
                f"this qemu-system-arm has no {t.machine} machine, which the {target} run needs "
                "(QEMU 7.2, Debian 12's, has it)"
            )
        return None
    probe = subprocess.run(
        ["arm-none-eabi-gcc", *t.cpu_flags.split(), "-c", "-x", "c", "-", "-o", os.devnull],
        input="int x;\n",
        capture_output=True,
        check=False,
        text=True,
    )
    if probe.returncode != 0:
        err = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"arm-none-eabi-gcc cannot compile for {target} ({t.cpu_flags}): {err}"
    return None


def firmware_info(fw_dir: Path) -> dict:
    """The firmware folder's `firmware.json` (written by export); KdqError if it is not one."""
    fw_dir = Path(fw_dir)
    path = fw_dir / "firmware.json"
    if not path.is_file() or not (fw_dir / "Makefile").is_file():
        raise KdqError(
            f"{fw_dir} is not a kdq_tf firmware folder (no firmware.json or Makefile); "
            "write one with `kdq_tf export --run RUN --firmware DIR`"
        )
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise KdqError(f"{path} is not valid JSON; export the firmware again") from None


def build_dir(fw_dir: Path, target: str, kernels: str, profile: bool = False) -> Path:
    return Path(fw_dir) / "build" / f"{target}-{kernels}{'-profile' if profile else ''}"


def binary_path(fw_dir: Path, info: dict, target: str, kernels: str, profile: bool = False) -> Path:
    suffix = ".elf" if target != "host" else ""
    return build_dir(fw_dir, target, kernels, profile) / f"{info['name']}_fw{suffix}"


def _compiler_version(target: str) -> str:
    cxx = "g++" if target == "host" else "arm-none-eabi-g++"
    return subprocess.run(
        [cxx, "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]


def object_cache(root: Path, opts: BuildOptions) -> Path:
    """Where this tree's objects for these flags live: keyed by the tree's identity, the
    target, the kernel set and the compiler, so a change to any of them never reuses objects."""
    base = Path(opts.cache or os.environ.get("KDQ_TF_CACHE") or Path.home() / ".cache" / "kdq_tf")
    key = hashlib.sha256(
        f"{tflm_tree.tree_identity(root)}|{opts.target}|{opts.kernels}|"
        f"{_compiler_version(opts.target)}".encode()
    ).hexdigest()[:16]
    kind = f"{opts.target}-{opts.kernels}"
    return base / "tflm-objects" / f"{kind}-{key}"


def build(fw_dir: str | Path, opts: BuildOptions) -> dict:
    """Runs the firmware Makefile; returns the binary, the time, and objects compiled vs reused.

    Raises:
        KdqError: missing tools or tree, or a failed compile (the log's last error line,
            and where the whole log is).
    """
    fw_dir = Path(fw_dir)
    info = firmware_info(fw_dir)
    check_tools(opts.target)
    root = tflm_tree.check_tree(
        opts.tflm, tflm_tree.kernel_files(info["ops"]), opts.kernels == "cmsis-nn"
    )
    cache = object_cache(root, opts)
    out = build_dir(fw_dir, opts.target, opts.kernels, opts.profile)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        "make",
        "-C",
        str(fw_dir),
        f"-j{opts.jobs or os.cpu_count() or 1}",
        f"TARGET={opts.target}",
        f"KERNELS={opts.kernels}",
        f"TFLM_DIR={root}",
        f"TFLM_OBJDIR={cache}",
        "TFLM_CACHE_KEYED=1",  # object_cache's key covers the tree's bytes, not its timestamps
        f"PROFILE={int(opts.profile)}",
    ]
    log.info(
        "building %s for %s with %s kernels (objects cached in %s)",
        fw_dir,
        opts.target,
        opts.kernels,
        cache,
    )
    t0 = time.perf_counter()
    cache.mkdir(parents=True, exist_ok=True)
    # Two builds sharing a cache (two shells, parallel tests) would write the same object files
    # at once; one waits for the other, then finds the objects made.
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = _count_objects(cache)
        returncode, lines = _make(cmd, out / "build.log")
    seconds = time.perf_counter() - t0
    if returncode != 0:
        errors = (
            [ln for ln in lines if "error:" in ln.lower() or "Error " in ln or "***" in ln]
            or lines[-1:]
            or ["?"]
        )
        raise KdqError(
            f"firmware build failed ({opts.target}, {opts.kernels}): {errors[0].strip()[:300]} "
            f"(full log: {out / 'build.log'})"
        )
    after = _count_objects(cache)
    binary = binary_path(fw_dir, info, opts.target, opts.kernels, opts.profile)
    result = {
        "target": opts.target,
        "kernels": opts.kernels,
        "binary": str(binary),
        "build_time_s": round(seconds, 1),
        "tflm_objects_compiled": after - before,
        "tflm_objects_in_cache": after,
        "object_cache": str(cache),
        "tflm": str(root),
        "warm": after == before,
        "profile": opts.profile,
    }
    (out / "build.json").write_text(
        json.dumps(result, indent=2)
    )  # run reads where the TFLM objects were
    if not opts.profile:  # `firmware run` without --kernels runs the latest plain build
        (fw_dir / "build" / f"{opts.target}.last").write_text(opts.kernels)
    return result


def _make(cmd: list[str], log_path: Path) -> tuple[int, list[str]]:
    """Runs make, logging progress every 10 compiled files (a cold build takes minutes); returns
    its status and output lines, also written to `log_path`."""
    lines, compiled = [], 0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if " -c " in line:
                compiled += 1
                if compiled % 10 == 0:
                    log.info("  compiled %d files", compiled)
    log_path.write_text(f"$ {' '.join(cmd)}\n" + "\n".join(lines) + "\n")
    return proc.returncode, lines


def last_kernels(fw_dir: Path, target: str) -> str | None:
    """The kernel set of the latest build for `target`, or None."""
    p = Path(fw_dir) / "build" / f"{target}.last"
    return p.read_text().strip() if p.is_file() else None


def _count_objects(cache: Path) -> int:
    return sum(1 for _ in cache.rglob("*.o")) if cache.is_dir() else 0
