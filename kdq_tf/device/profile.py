"""Per-operator device profile: where the instructions of one inference go.

A PROFILE=1 build of the firmware (template/profiler.h) hands TFLM's interpreter a
MicroProfilerInterface that reads the same SysTick counter as the whole-inference figure,
around every operator's Invoke. The image runs on its embedded test images under QEMU
(`-icount shift=0`: ticks count instructions) and prints each operator's ticks. This module
joins them with what the flatbuffer says of each operator (shapes, MACs, the bytes of its
tensors in the arena), and checks that the operators add up to the whole inference: the gap is
the interpreter's own work between operators.

On a board the same build gives cycles instead of instructions: point `kdq_timer_ticks()` in
timer.h at the DWT cycle counter (see the firmware README).
"""

import io
import math
from pathlib import Path

from kdq_tf import files
from kdq_tf.deploy import flatbuf
from kdq_tf.device import fuse
from kdq_tf.device.build import BuildOptions, build, firmware_info
from kdq_tf.device.run import run
from kdq_tf.device.targets import target as target_info
from kdq_tf.errors import KdqError
from kdq_tf.report import profile_markdown


def macs(op: dict) -> int:
    """Multiply-accumulates of one operator, from its tensors' shapes (0 for ops without any).

    CONV_2D (and kdq_tf's fused KDQ_LUT_CONV): each output element sums KH x KW x Cin products;
    DEPTHWISE_CONV_2D: KH x KW (one input channel per output channel); FULLY_CONNECTED: one
    product per input feature."""
    name = op["op"]
    kernel = fuse.kernel_size(op)
    if kernel is not None:  # KDQ_LUT_CONV: a CONV_2D whose kernel shape is in its options
        return (
            math.prod(op["outputs"][0]["shape"])
            * kernel[0]
            * kernel[1]
            * op["inputs"][0]["shape"][-1]
        )
    if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(op["inputs"]) < 2:
        return 0
    n_out = math.prod(op["outputs"][0]["shape"])
    w = op["inputs"][1]["shape"]
    if name == "CONV_2D":  # filter [Cout, KH, KW, Cin]
        return n_out * w[1] * w[2] * w[3]
    if name == "DEPTHWISE_CONV_2D":  # filter [1, KH, KW, Cout]
        return n_out * w[1] * w[2]
    return n_out * w[-1]  # FULLY_CONNECTED: filter [Cout, Cin]


def arena_bytes(op: dict) -> int:
    """Bytes of the operator's tensors that live in the arena while it runs: its non-constant
    inputs and outputs (a DECODE op's output is a decoded weight tensor). Kernel scratch buffers
    are not counted: the flatbuffer does not say them."""
    return sum(t["bytes"] for t in op["inputs"] + op["outputs"] if not t["constant"])


def _tag(op_name: str) -> str:
    return op_name.split(":", 1)[1] if op_name.startswith("CUSTOM:") else op_name


def table(
    model: bytes, ops: list[dict], samples: int, whole_ticks: int, insns_per_tick: float
) -> dict:
    """The profile from a PROFILE=1 run's operator ticks (summed over `samples` inferences);
    `insns_per_tick`: the board's SysTick ticks to instructions (kdq_tf.device.targets).

    Raises:
        KdqError: the run's operators are not the model's (a firmware exported from another
            model, or a profile build older than the model).
    """
    graph = flatbuf.operators(model)
    tags = [_tag(o["op"]) for o in graph]
    if [o["tag"] for o in ops] != tags:
        raise KdqError(
            f"the profile build ran {len(ops)} operators ({' '.join(o['tag'] for o in ops[:4])} "
            f"...), the model has {len(graph)} ({' '.join(tags[:4])} ...): export the firmware "
            "again and rerun `kdq_tf firmware profile`"
        )
    whole = whole_ticks * insns_per_tick / samples
    rows = []
    for i, (o, p) in enumerate(zip(graph, ops, strict=True)):
        insns = p["ticks"] * insns_per_tick / samples
        m = macs(o)
        rows.append(
            {
                "index": i,
                "op": o["op"],
                "input_shapes": [t["shape"] for t in o["inputs"] if not t["constant"]],
                "weight_shapes": [t["shape"] for t in o["inputs"] if t["constant"]],
                "output_shapes": [t["shape"] for t in o["outputs"]],
                "macs": m,
                "instructions": round(insns),
                "instructions_per_mac": round(insns / m, 2) if m else None,
                "share": insns / whole if whole else None,
                "arena_bytes": arena_bytes(o),
            }
        )
    total = sum(r["instructions"] for r in rows)
    return {
        "operators": rows,
        "macs": sum(r["macs"] for r in rows),
        "instructions_per_inference": round(whole),
        "operators_instructions": total,
        # what the operators account for; the rest is the interpreter between them
        "operators_share": total / whole if whole else None,
    }


def profile(
    fw_dir: str | Path,
    target: str = "cortex-m4",
    kernels: str = "cmsis-nn",
    tflm: str | None = None,
    jobs: int | None = None,
) -> dict:
    """Builds the PROFILE=1 image of an exported firmware folder, runs it, and returns the
    per-operator profile with the run's checks (bit-exact against Python TFLM, memory).

    Raises:
        KdqError: a host target (it has no instruction counter), or any build or run error.
    """
    if target == "host":
        raise KdqError(
            "firmware profile needs a Cortex-M target (--target cortex-m4, cortex-m7, cortex-m33 "
            "or cortex-m55): QEMU counts the instructions; the host build has no counter"
        )
    fw_dir = Path(fw_dir)
    info = firmware_info(fw_dir)
    built = build(fw_dir, BuildOptions(target, kernels, tflm, jobs, profile=True))
    result = run(fw_dir, target, kernels, profile=True)
    if "ops" not in result or "systick_ticks_per_inference" not in result:
        raise KdqError(
            f"the profile build in {Path(built['binary']).parent} printed no operator times; "
            "export the firmware again (its main.cc predates profiling)"
        )
    model = (fw_dir / info["model_file"]).read_bytes()
    whole_ticks = result["systick_ticks"]
    per_tick = target_info(target).insns_per_tick
    prof = table(model, result.pop("ops"), result["samples"], whole_ticks, per_tick)
    return {
        "target": target,
        "kernels": kernels,
        "model": info["name"],
        "samples": result["samples"],
        "bit_exact": result["bit_exact"],
        "unit": "instructions (QEMU -icount shift=0)",
        **prof,
        "run": result,
    }


def chart(prof: dict) -> bytes:
    """A bar chart of instructions per operator, in execution order (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = prof["operators"]
    labels = [f"{r['index']} {r['op'].replace('CUSTOM:', '')}" for r in rows]
    values = [r["instructions"] / 1e6 for r in rows]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.5))
    ax.barh(range(len(rows)), values, color="tab:blue")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    for i, r in enumerate(rows):
        if r["instructions_per_mac"] is not None:
            ax.text(values[i], i, f" {r['instructions_per_mac']:.2f}/MAC", va="center", fontsize=7)
    ax.set_xlabel("M instructions per inference")
    ax.set_title(
        f"{prof['model']}, {prof['target']} ({prof['kernels']}): "
        f"{prof['instructions_per_inference'] / 1e6:.2f} M in all",
        fontsize=9,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write(fw_dir: str | Path, prof: dict) -> str:
    """`profile.json`, `profile.md` and `profile.png` in the firmware folder, and the profile in
    export's report when the folder came from `kdq_tf export`; returns the markdown."""
    from kdq_tf.device.report import add_to_export_report

    fw_dir = Path(fw_dir)
    md = profile_markdown(prof)
    files.write_json(fw_dir / "profile.json", prof)
    files.write_text(fw_dir / "profile.md", md)
    files.write_bytes(fw_dir / "profile.png", chart(prof))
    add_to_export_report(
        fw_dir, "profiles", {f"{prof['target']}/{prof['kernels']}": {**prof, "run": None}}, True
    )
    return md
