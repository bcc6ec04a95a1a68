"""One candidate, cheapest step first: estimate, distill, QAT, convert, measure on the firmware.

Every trial trains on the training split and is scored on the validation split only: the data
it gets has the validation split in place of the test split, so nothing a trial writes has seen
a test image. The test split is scored once, for the chosen model (kdq_tf.search.engine).
"""

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdq_tf import files
from kdq_tf.errors import KdqError, ModelError
from kdq_tf.search.budget import Budget
from kdq_tf.search.space import Candidate, build_model, estimate

log = logging.getLogger(__name__)

FIRMWARE_SAMPLES = 10  # inputs the firmware checks bit for bit; the deployed image keeps one


@dataclass(frozen=True)
class TrialSchedule:
    """How each candidate trains during the search (short: the pruner needs per-epoch scores)."""

    epochs: int = 3  # distillation epochs on the cached teacher logits
    qat_epochs: int = 1
    structure_epochs: int = 1  # clustering epochs before QAT, for LUT candidates
    lr: float = 0.002
    qat_lr: float = 1e-4
    batch_size: int = 128
    temperature: float = 2.0
    lam: float = 0.5

    def __post_init__(self):
        for name in ("epochs", "qat_epochs", "structure_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise KdqError(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.lr <= 0 or self.qat_lr <= 0:
            raise KdqError(f"learning rates must be > 0, got {self.lr} and {self.qat_lr}")


def val_view(data):
    """The data set with its validation split standing in for the test split."""
    if not data.info.n_val:
        raise KdqError("the search selects on a validation split; set --val-split above 0")
    return dataclasses.replace(
        data,
        x_test=data.x_val,
        y_test=data.y_val,
        info=dataclasses.replace(data.info, n_test=data.info.n_val),
    )


def trial_config(clusters: int, trial_dir: Path, student: Path, s, sched: TrialSchedule):
    """The run config that trains one student, resumable in its own folder."""
    from kdq_tf.config import load_config

    return load_config(
        overrides={
            "run.out": str(trial_dir / "run"),
            "run.seed": s.seed,
            "run.resume": True,  # a trial run again (after --resume) continues its epochs
            "data.dataset": s.dataset,
            "data.data_dir": s.data_dir,
            "data.limit": s.limit,
            "data.val_split": s.val_split,
            "data.batch_size": sched.batch_size,
            "teacher.logits": s.teacher_logits,
            "distill.student": str(student),
            "distill.epochs": sched.epochs,
            "distill.lr": sched.lr,
            "distill.temperature": sched.temperature,
            "distill.lam": sched.lam,
            "distill.cluster": clusters,
            "distill.structure_epochs": sched.structure_epochs,
            "qat.enabled": True,
            "qat.epochs": sched.qat_epochs,
            "qat.lr": sched.qat_lr,
            "export.compress": "lut" if clusters else "none",
        }
    )


def floors(measured: list[dict]) -> dict:
    """What the image adds around the model: the smallest flash besides the model and RAM
    besides the arena seen so far, per kernel set and op set (plain blocks or also depthwise;
    with DECODE or without). Added to a candidate's weights and arena floor, the floor of an op
    set the candidate's ops include keeps the estimate a lower bound of its image."""
    out: dict = {}
    for m in measured:
        decode = bool((m.get("compressed") or {}).get("tensors_compressed"))
        for k, fig in m.get("images", {}).items():
            f = out.setdefault(
                (k, m["candidate"]["block"], decode),
                {"flash": fig["flash_other"], "ram": fig["ram_other"]},
            )
            f["flash"] = min(f["flash"], fig["flash_other"])
            f["ram"] = min(f["ram"], fig["ram_other"])
    return out


def _floor(c: Candidate, kernels: str, floor: dict, what: str) -> int:
    # A separable or hybrid candidate runs every op a plain one does (and the same ops as each
    # other), a LUT one every op an int8 one does (its LUT may also save nothing and ship without
    # DECODE), so their floors bound it too.
    blocks = ("plain",) if c.block == "plain" else ("plain", "separable", "hybrid")
    decodes = (False, True) if c.clusters else (False,)
    seen = [
        floor[(kernels, b, d)][what] for b in blocks for d in decodes if (kernels, b, d) in floor
    ]
    return min(seen, default=0)


def estimated_figures(c: Candidate, est: dict, kernel_sets, floor: dict) -> dict:
    """Lower bounds of the image's flash and RAM: the best over the kernel sets searched."""
    flash = min(est["weight_bytes"] + _floor(c, k, floor, "flash") for k in kernel_sets)
    ram = min(est["arena_floor"] + _floor(c, k, floor, "ram") for k in kernel_sets)
    return {"flash": flash, "ram": ram, "instructions": None}


def convert(run_dir: Path, cfg, x_check: np.ndarray) -> dict:
    """The trained QAT student as full int8, its device flatbuffer (LUT-compressed when the
    candidate is), and the arena TFLM needs for it, found by bisection."""
    from kdq_tf.deploy import compression, flatbuf
    from kdq_tf.deploy.convert import to_tflite
    from kdq_tf.deploy.export import load_run_model
    from kdq_tf.device.micro import find_arena_size

    rm = load_run_model(run_dir, cfg)
    model_bytes = to_tflite(rm.model, "int8")
    device = flatbuf.strip_for_device(model_bytes)
    out = {"model_bytes": model_bytes, "int8_device_bytes": len(device), "compressed": None}
    if cfg.export.compress == "lut":
        try:
            small, info = compression.compress_device(device, model_bytes, x_check)
        except ModelError as e:  # no tensor shrinks (small layers): the candidate ships int8
            out["compressed"] = {"bytes": len(device), "tensors_compressed": 0, "why": str(e)}
        else:
            if info["bit_exact_tflm"] != info["samples"]:
                raise KdqError(f"LUT compression changed outputs on {run_dir}: {info}")
            keep = ("bytes", "uncompressed_bytes", "ratio", "tensors_compressed")
            out["compressed"] = {k: info[k] for k in keep}
            device = small
    out["device"] = device
    out["arena_bytes"] = find_arena_size(device)
    return out


def int8_accuracy(model_bytes: bytes, data) -> float:
    """The int8 model's accuracy on the validation split, on LiteRT."""
    from kdq_tf.runtime.runner import Runner

    x = data.info.preprocess.apply(data.x_val)
    top = Runner.from_bytes(model_bytes).predict_logits(x).argmax(-1)
    return float((top == data.y_val).mean())


def build_and_run(fw_dir: Path, target: str, kernels: str, tflm) -> dict:
    from kdq_tf.device.build import BuildOptions, build
    from kdq_tf.device.run import run

    build(fw_dir, BuildOptions(target=target, kernels=kernels, tflm=tflm))
    return run(fw_dir, target, kernels)


def _fits_arena(fw_dir: Path, write, arena: int, target: str, kernels: str, tflm):
    """Builds the firmware with this arena and runs it; the run, or None if TFLM cannot
    allocate the model's tensors in it."""
    write(arena, exact=True)
    try:
        return build_and_run(fw_dir, target, kernels, tflm)
    except KdqError as e:
        if "kTensorArenaSize" in str(e):
            return None
        raise


def tight_arena(
    fw_dir: Path, write, target: str, kernels: str, tflm, first: dict, granularity: int = 64
) -> dict:
    """The run of the firmware with the smallest arena (a multiple of `granularity`) that the
    target accepts, found by bisection on the target itself.

    `first` is the run with the export's arena (which worked). TFLM reports how much of it the
    model used; that is where the search starts, since it is a floor: allocation can need more
    at its peak than remains in use (LUT models do: DECODE's scratch)."""
    used = -(-first["arena_used_bytes"] // granularity) * granularity
    best = _fits_arena(fw_dir, write, used, target, kernels, tflm)
    if best is not None:
        return best
    lo, hi = used, first["arena_chosen_bytes"]  # lo fails, hi works
    best, last = None, None
    while hi - lo > granularity:
        mid = (lo + hi) // 2 // granularity * granularity
        if mid <= lo:
            break
        last = mid
        r = _fits_arena(fw_dir, write, mid, target, kernels, tflm)
        if r is None:
            lo = mid
        else:
            hi, best = mid, r
    if best is None or last != hi:  # the folder holds a failed probe: build the smallest that ran
        best = _fits_arena(fw_dir, write, hi, target, kernels, tflm)
    return best


DECODE_VARIANT = "+decode"  # an image key's suffix: the LUT model with TFLM's DECODE operators


def kernel_set(image_key: str) -> str:
    """The kernel set an image was built with: "cmsis-nn+decode" -> "cmsis-nn"."""
    return image_key.removesuffix(DECODE_VARIANT)


def measure_images(folder: Path, conv: dict, data, kernel_sets, target: str, tflm) -> dict:
    """Builds and runs the real firmware for each kernel set; returns each image's figures.

    A LUT-compressed model gets two images per kernel set: the firmware's default, each DECODE
    -> CONV_2D pair fused (RAM near the dense model's, more instructions), and `<kernels>+decode`
    with TFLM's DECODE operators (the decoded kernels in the arena, fewer instructions). Which
    one ships is the budget's call (`pick_image`).

    Each kernel set gets its own folder, `firmware-<kernels>`, built first with the export's
    arena (the host's bisection plus a margin), then with the smallest arena the target runs
    the model in (`tight_arena`): that image is the one measured and shipped. The
    firmware carries FIRMWARE_SAMPLES validation inputs for the bit-exact check; the image a
    user flashes carries one, so flash counts the measured image less the others."""
    from kdq_tf.deploy.export import firmware_project

    x = data.info.preprocess.apply(data.x_val[:FIRMWARE_SAMPLES])
    y = data.y_val[:FIRMWARE_SAMPLES]
    images = {}
    lut = bool((conv.get("compressed") or {}).get("tensors_compressed"))
    keys = [v for k in kernel_sets for v in ((k, k + DECODE_VARIANT) if lut else (k,))]
    for key in keys:
        k, fused = kernel_set(key), not key.endswith(DECODE_VARIANT)
        fw_dir = folder / f"firmware-{key}"

        def write(arena: int, exact: bool) -> None:
            if fw_dir.exists():  # the build folders stay: the second build reuses objects
                for p in fw_dir.iterdir():
                    if p.is_file():
                        p.unlink()
            firmware_project(
                conv["model_bytes"],
                fw_dir,
                "model",
                data.info.class_names,
                x,
                y,
                FIRMWARE_SAMPLES,
                arena,
                device_bytes=conv["device"],
                exact_arena=exact,
                fuse_lut=fused,
            )

        write(conv["arena_bytes"], exact=False)
        r = tight_arena(fw_dir, write, target, k, tflm, build_and_run(fw_dir, target, k, tflm))
        mem = r["memory"]
        extra = mem["flash_test_images_bytes"] * (r["samples"] - 1) // max(1, r["samples"])
        images[key] = {
            "flash": mem["flash_bytes"] - extra,
            "ram": mem["ram_bytes"],
            "instructions": r.get("instructions_per_inference"),
            "model": mem["flash_model_bytes"],
            "tflm": mem.get("flash_tflm_bytes"),  # TFLM's and CMSIS-NN's code, DECODE included
            "decode": mem.get("flash_decode_bytes"),
            "flash_other": mem["flash_bytes"] - extra - mem["flash_model_bytes"],
            "ram_other": mem["ram_bytes"] - mem["ram_arena_bytes"],
            "arena": mem["ram_arena_bytes"],
            "arena_used": r.get("arena_used_bytes"),
            "bit_exact": f"{r['bit_exact']}/{r['samples']}",
            "exact": r["bit_exact"] == r["samples"],
            "firmware": fw_dir.name,
        }
    return images


def pick_image(images: dict, budget: Budget) -> str:
    """The image to ship (a kernel set, `+decode` for a LUT model's DECODE variant): among images
    that fit, the fewest instructions; if none fits, the one that misses by the least (relative
    to the budget)."""

    def miss(k):
        return sum(max(0.0, v) for v in budget.constraints(images[k]))

    fitting = [k for k in images if budget.fits(images[k]) and images[k]["exact"]]
    if fitting:
        return min(fitting, key=lambda k: (images[k]["instructions"] or 0, images[k]["flash"]))
    return min(images, key=miss)


def run_trial(
    c: Candidate, s, sched: TrialSchedule, data, measured: list[dict], callbacks=()
) -> dict:
    """Runs one candidate to its measured image. Returns its record; "outcome" says how far it
    got: "rejected" (estimate over budget), "measured". Pruning raises through `callbacks`.

    Args:
        s: the search settings (kdq_tf.search.engine.SearchSettings).
        data: the data set as `val_view` gives it.
        measured: records of earlier measured trials, for the estimate's floors.
    """
    info = data.info
    est = estimate(c, info.input_shape, info.num_classes)
    rec = {"candidate": c.to_dict(), "estimate": est}
    rec["estimated"] = estimated_figures(c, est, s.kernel_sets, floors(measured))
    over = {k: v for k, v in s.budget.misses(rec["estimated"]).items() if v > 0}
    if over:
        rec.update(outcome="rejected", over_budget_by=over, seconds=0.0)
        return rec
    trial_dir = Path(s.out) / "trials" / c.key
    rec.update(
        measure_student(
            lambda: build_model(c, info.input_shape, info.num_classes),
            c.clusters,
            trial_dir,
            s,
            sched,
            data,
            callbacks,
        )
    )
    rec["run_dir"] = str((trial_dir / "run").relative_to(Path(s.out)))
    return rec


def measure_student(
    build, clusters: int, folder: Path, s, sched: TrialSchedule, data, callbacks=()
) -> dict:
    """Distills the student `build()` makes (clustered to `clusters` values and LUT-compressed
    when > 0), QATs it, converts it to full int8 and measures its firmware images: the figures
    a trial records. Also what benchmarks/search.py runs for the zoo's students.

    Args:
        folder: where the student trains (resumable) and its firmware is built.
        s: needs `seed`, `dataset`, `data_dir`, `limit`, `val_split`, `teacher_logits`,
            `kernel_sets`, `target`, `tflm` and `budget` (kdq_tf.search.engine.SearchSettings).
    """
    from kdq_tf.pipeline import run_distill

    t0 = time.perf_counter()
    student = folder / "candidate.keras"
    if not student.is_file():
        files.save_keras(build(), student)
    cfg = trial_config(clusters, folder, student, s, sched)
    run, metrics = run_distill(cfg, data=data, callbacks=callbacks)
    x_check = data.info.preprocess.apply(data.x_val[:FIRMWARE_SAMPLES])
    conv = convert(run.path, cfg, x_check)
    files.write_bytes(folder / "model_int8.tflite", conv["model_bytes"])
    rec = {
        "val_accuracy_float": metrics["student"]["accuracy"],  # the val split (val_view)
        "val_accuracy": int8_accuracy(conv["model_bytes"], data),
        "device_model_bytes": len(conv["device"]),
        "int8_device_bytes": conv["int8_device_bytes"],
        "compressed": conv["compressed"],
        "arena_bytes_host": conv["arena_bytes"],
        "images": measure_images(folder, conv, data, s.kernel_sets, s.target, s.tflm),
    }
    k = pick_image(rec["images"], s.budget)
    rec["kernels"] = k
    rec["figures"] = {f: rec["images"][k][f] for f in ("flash", "ram", "instructions")}
    rec["bit_exact"] = rec["images"][k]["bit_exact"]
    rec["misses"] = s.budget.misses(rec["figures"])
    rec["fits"] = s.budget.fits(rec["figures"]) and rec["images"][k]["exact"]
    rec.update(outcome="measured", seconds=round(time.perf_counter() - t0, 1))
    return rec
