"""Runs a built firmware (host binary, or Cortex-M image under QEMU) and checks it.

The image prints the raw output bytes of the test images export embedded; they are
compared with the `tflite_micro` Python interpreter's on the same input bytes, which is
the reference for TFLM (LiteRT's optimized kernels can differ by a few LSB). Flash and RAM
come from `size` on the image; the arena the target used, from the image itself.
"""

import json
import logging
import re
import subprocess
from pathlib import Path

import numpy as np

from kdq_tf.device.build import binary_path, build_dir, check_tools, firmware_info, last_kernels
from kdq_tf.device.micro import MicroRunner
from kdq_tf.device.targets import target as target_info
from kdq_tf.errors import KdqError

# The LUT decoder's objects in a link map: the firmware's own (kdq_decode.cc, and the fused LUT
# convolution's glue, kdq_lut_conv.cc), and TFLM's DECODE kernel with its states, which firmware
# exported before kdq_decode linked.
DECODE_OBJECTS = (
    "kdq_decode",
    "kdq_lut_conv",
    "decode",
    "decode_state",
    "decode_state_lut",
    "decode_state_huffman",
    "decode_state_prune",
)

HOST_ARENA = 32 << 20  # ample for any model a microcontroller runs

log = logging.getLogger(__name__)

_SAMPLE = re.compile(r"^kdq: sample (\d+) label (-?\d+) class (\d+) (.*) out((?: -?\d+)+)$")
_OP = re.compile(r"^kdq: op (\d+) (\S+) (\d+)$")  # a PROFILE=1 build's ticks per operator


def command(binary: Path, target: str) -> list[str]:
    if target == "host":
        return [str(binary)]
    return [
        "qemu-system-arm",
        "-M",
        target_info(target).machine,
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-icount",
        "shift=0",
        "-semihosting-config",
        "enable=on,target=native",
        "-kernel",
        str(binary),
    ]


_ARENA_MISS = re.compile(r"Requested: (\d+), available (\d+), missing: (\d+)")


def arena_advice(text: str, arena: int) -> str:
    """How large kTensorArenaSize must at least be, from TFLM's allocation failure in a run's
    output ("... Requested: R, available A, missing: M"); "" when the output has no such line.
    A target's kernels can need more scratch than the host the arena was sized on (CMSIS-NN's
    Helium depthwise kernels do)."""
    m = _ARENA_MISS.search(text)
    if not m:
        return ""
    return f" (TFLM is {int(m.group(3)):,} B short: at least {arena + int(m.group(3)):,})"


def parse_output(text: str) -> dict:
    """The `kdq:` lines of a firmware run -> samples, outputs, arena used, ticks, and a profile
    build's ticks per operator (`ops`: index, tag, ticks over every inference)."""
    samples, ops, facts = [], [], {}
    for line in text.splitlines():
        line = line.strip()
        op = _OP.match(line)
        if op:
            ops.append({"index": int(op[1]), "tag": op[2], "ticks": int(op[3])})
            continue
        m = _SAMPLE.match(line)
        if m:
            samples.append(
                {
                    "index": int(m[1]),
                    "label": int(m[2]),
                    "class": int(m[3]),
                    "class_name": m[4],
                    "out": [int(v) for v in m[5].split()],
                }
            )
        elif line.startswith("kdq: error"):
            facts["error"] = line[len("kdq: error") :].strip()
        elif line.startswith(("kdq: arena_used ", "kdq: ticks ")):
            key, value = line[5:].split()
            facts[key] = int(value)
    return {"samples": samples, **({"ops": ops} if ops else {}), **facts}


def expected_outputs(fw_dir: Path, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """The Python TFLM interpreter's raw outputs on the embedded inputs, and the labels."""
    blob = np.load(fw_dir / "test_samples.npz")
    model = (fw_dir / info.get("check_model_file", info["model_file"])).read_bytes()
    try:
        runner = MicroRunner(model, info["arena_bytes"])
    except RuntimeError:  # an arena sized to a 32-bit target: the 64-bit host needs more, and
        runner = MicroRunner(model, HOST_ARENA)  # outputs do not depend on the arena's size
    return runner.run_raw(blob["x_q"]), blob["y"]


def memory(binary: Path, target: str, info: dict) -> dict:
    """Flash (text + rodata) and RAM (data + bss) of the image, with the model's, the test
    images' and the arena's shares, from `size -A` and the symbol table."""
    prefix = "" if target == "host" else "arm-none-eabi-"
    sections = {}
    for line in subprocess.run(
        [f"{prefix}size", "-A", str(binary)], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    symbols = {}
    for line in subprocess.run(
        [f"{prefix}nm", "-S", "-C", str(binary)], capture_output=True, text=True, check=True
    ).stdout.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4:
            symbols[parts[3]] = int(parts[1], 16)
    ident = info["name"]

    def sym(key):
        return next((v for k, v in symbols.items() if k.split("::")[-1] == key), 0)

    ram_sections = (".data", ".bss")
    flash_sections = [
        s
        for s in sections
        if s not in ram_sections + (".heap", ".stack")
        and not s.startswith(
            (
                ".debug",
                ".comment",
                ".ARM.attributes",
                ".note",
                ".gnu",
                ".dynamic",
                ".got",
                ".tbss",
                ".tdata",
            )
        )
    ]
    flash = sum(sections[s] for s in flash_sections) + sections.get(
        ".data", 0
    )  # .data's initial values
    model, samples, arena = (
        sym(f"g_{ident}_model_data"),
        sym(f"g_{ident}_test_inputs"),
        sym("tensor_arena"),
    )
    ram = sections.get(".data", 0) + sections.get(".bss", 0)
    out = {
        "tool": f"{prefix}size -A",
        "flash_bytes": flash,
        "flash_model_bytes": model,
        "flash_test_images_bytes": samples,
        "flash_code_and_tflm_bytes": flash - model - samples,
        "ram_bytes": ram,
        "ram_arena_bytes": arena,
        "ram_other_bytes": ram - arena,
        "sections": {k: v for k, v in sections.items() if k in flash_sections or k in ram_sections},
    }
    link_map, build = binary.with_suffix(".map"), binary.parent / "build.json"
    if link_map.is_file() and build.is_file():  # the Cortex-M4 link writes a map: shares by origin
        shares = map_shares(
            link_map,
            Path(json.loads(build.read_text())["object_cache"]),
            target_info(target).ram_base,
        )
        out.update(
            flash_tflm_bytes=shares["flash"]["tflm"],
            flash_decode_bytes=shares["flash"]["decode"],
            flash_runtime_bytes=shares["flash"]["runtime"],
            flash_app_bytes=shares["flash"]["app"],
            ram_runtime_bytes=shares["ram"]["runtime"],
        )
    return out


_MAP_ENTRY = re.compile(r"^\s*(?:\S+\s+)?0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+\.o\)?|\S+\.o)\s*$")
_LOADED = (".text", ".ARM.extab", ".ARM.exidx", ".init_array", ".data", ".bss")


def map_shares(map_path: Path, tflm_objects: Path, ram_base: int = 0x20000000) -> dict:
    """Flash and RAM bytes by origin, from the linker map: TFLite-Micro (and CMSIS-NN) objects,
    the application (main, model data, test images, startup), and the C/C++ runtime (newlib,
    libstdc++, libgcc). The map gives string sections before the linker merges duplicates, so
    the shares add up to a little more (under 1% here) than the image's sections. `ram_base`:
    where the board's linker script puts RAM (below it: flash)."""
    flash = {"tflm": 0, "app": 0, "runtime": 0, "decode": 0}  # decode: part of tflm or app
    ram = dict(flash)
    in_map, section = False, ""
    tflm = str(tflm_objects)
    for line in map_path.read_text(errors="replace").splitlines():
        if not in_map:
            in_map = line.startswith("Linker script and memory map")
            continue
        if line.startswith("."):  # an output section; only those the image loads count
            section = line.split()[0]
        m = _MAP_ENTRY.match(line)
        if section not in _LOADED or not m or not int(m[2], 16):
            continue
        addr, size, src = int(m[1], 16), int(m[2], 16), m[3]
        origin = "tflm" if src.startswith(tflm) else ("runtime" if ".a(" in src else "app")
        share = ram if addr >= ram_base else flash
        share[origin] += size
        if Path(src).name.split(".")[0] in DECODE_OBJECTS:  # the LUT decoder
            share["decode"] += size
    return {"flash": flash, "ram": ram}


def run(
    fw_dir: str | Path,
    target: str = "host",
    kernels: str | None = None,
    timeout: float = 600,
    profile: bool = False,
) -> dict:
    """Runs the built image; returns the comparison with Python TFLM and the measurements.

    Args:
        kernels: which build to run; None: the latest built for `target`.
        profile: run the PROFILE=1 build (kdq_tf.device.profile); the result has `ops`.

    Raises:
        KdqError: missing QEMU, no build, a crash, a timeout, or output that cannot be read.
    """
    fw_dir = Path(fw_dir)
    info = firmware_info(fw_dir)
    kernels = kernels or last_kernels(fw_dir, target)
    binary = binary_path(fw_dir, info, target, kernels or "reference", profile)
    if kernels is None or not binary.is_file():
        raise KdqError(
            f"no {target} {'profile ' if profile else ''}build in {fw_dir}; "
            f"run `kdq_tf firmware {'profile' if profile else 'build'} {fw_dir} --target {target}`"
            " first"
        )
    check_tools(target, run=True)
    cmd = command(binary, target)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise KdqError(f"the {target} firmware did not finish within {timeout:.0f} s") from None
    logs = build_dir(fw_dir, target, kernels, profile)
    (logs / "run.log").write_text(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    got = parse_output(proc.stdout)
    if proc.returncode != 0 or "error" in got or not got["samples"]:
        why = (
            got.get("error")
            or (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        )
        if "kTensorArenaSize" in why:
            why += arena_advice(proc.stdout + proc.stderr, info["arena_bytes"])
        raise KdqError(f"the {target} firmware failed: {why} (log: {logs / 'run.log'})")
    want, labels = expected_outputs(fw_dir, info)
    out = np.array([s["out"] for s in got["samples"]])
    if out.shape != want.shape:
        raise KdqError(
            f"the firmware printed {out.shape[0]} outputs of {out.shape[1]} values; expected "
            f"{want.shape[0]} of {want.shape[1]}: export the firmware again"
        )
    exact = np.all(out == want, axis=1)
    result = {
        "target": target,
        "kernels": kernels,
        "samples": len(out),
        "bit_exact": int(exact.sum()),
        "top1_agreement": float((out.argmax(1) == want.argmax(1)).mean()),
        "max_abs_diff": int(np.abs(out.astype(np.int64) - want).max()),
        "predicted": [s["class"] for s in got["samples"]],
        "predicted_names": [s["class_name"] for s in got["samples"]],
        "labels": [int(v) for v in labels],
        "class_names": info.get("class_names"),
        "correct": int((out.argmax(1) == labels).sum()),
        "arena_used_bytes": got.get("arena_used"),
        "arena_chosen_bytes": info["arena_bytes"],
        "memory": memory(binary, target, info),
    }
    if "ops" in got:
        result["ops"] = got["ops"]
    if "ticks" in got:
        per = got["ticks"] / len(out)
        result.update(
            systick_ticks=got["ticks"],  # over every sample
            systick_ticks_per_inference=round(per, 1),
            instructions_per_inference=round(per * target_info(target).insns_per_tick),
        )
    return result
