"""Export stage: a run's student -> .tflite bytes -> C arrays / firmware, checked on LiteRT and
TFLM.

Everything is computed first and written last (each file atomically), so a failed
or interrupted export leaves no half-written artifact.
"""

import gzip
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdq_tf import __version__, files
from kdq_tf.config import Config, config_from_dict, load_config
from kdq_tf.data.dataset import load_dataset
from kdq_tf.deploy import compression, flatbuf
from kdq_tf.deploy.convert import to_tflite
from kdq_tf.device import carray, fuse
from kdq_tf.device.micro import MicroRunner, find_arena_size
from kdq_tf.device.project import write_firmware
from kdq_tf.distill.qat import load_qat_model
from kdq_tf.distill.structure import load_structured_qat, preserve_of
from kdq_tf.errors import KdqError
from kdq_tf.report import export_markdown
from kdq_tf.runs import load_student
from kdq_tf.runtime.runner import Runner

log = logging.getLogger(__name__)

_FILE_FOR_MODE = {
    "int8": "model_int8.tflite",
    "int16x8": "model_int16x8.tflite",
    "float16": "model_float16.tflite",
    "float32": "model_float32.tflite",
}


@dataclass(frozen=True)
class RunModel:
    model: object  # the Keras model to export
    kind: str  # "qat" or "float"
    path: Path


def load_run_model(run_dir: Path, cfg: Config | None = None) -> RunModel:
    """The QAT student if the run has one, else the float student (clustered/pruned if it was).

    Raises:
        KdqError: the folder holds neither.
    """
    qat, flt = run_dir / "student_qat.h5", run_dir / "student.keras"
    if qat.is_file():
        structured = cfg is not None and preserve_of(cfg) != "none"
        return RunModel(
            load_structured_qat(run_dir, cfg) if structured else load_qat_model(qat), "qat", qat
        )
    for p in (
        run_dir / "student_structured.keras",
        flt,
    ):  # clustered/pruned without QAT, else distilled
        if p.is_file():
            return RunModel(load_student(p), "float", p)
    raise KdqError(
        f"{run_dir} holds no student (student_qat.h5 or student.keras); run kdq_tf distill first"
    )


def run_config(run_dir: Path, export_overrides: dict, sets=()) -> Config:
    """The run's saved config with the export section overridden."""
    saved = files.read_json(run_dir / "config.json")
    if not saved:
        raise KdqError(f"{run_dir} has no config.json; pass the folder of a kdq_tf distill run")
    base = config_from_dict(saved).to_dict()
    flat = {f"{s}.{k}": v for s, t in base.items() for k, v in t.items()}
    return load_config(overrides={**flat, **export_overrides}, sets=sets)


def tensor_spec(details: dict) -> carray.TensorSpec:
    scale, zero = details["quantization"]
    return carray.TensorSpec(
        tuple(int(d) for d in details["shape"]),
        np.dtype(details["dtype"]).name,
        float(scale),
        int(zero),
    )


def metadata_for(info) -> dict:
    """What a device needs to feed the model: classes and the exact preprocessing of training."""
    p = info.preprocess
    return {
        "kdq_tf_version": __version__,
        "class_names": list(info.class_names),
        "input_shape": list(info.input_shape),
        "preprocess": {"scale": p.scale, "mean": list(p.mean), "std": list(p.std)},
        "dataset": info.name,
    }


def verify(
    model_bytes: bytes,
    keras_model,
    x: np.ndarray,
    y: np.ndarray,
    arena_size: int | None = None,
    device_bytes: bytes | None = None,
) -> dict:
    """Runs the model on LiteRT (optimized and reference kernels) and TFLM; compares with Keras.

    Args:
        model_bytes: the `.tflite`.
        keras_model: the model it came from, or None.
        x: normalised inputs (N, H, W, C); y: labels (N,).
        arena_size: TFLM arena; searched when None.
        device_bytes: the stripped flatbuffer the firmware carries; checked bit-exact against
            `model_bytes` on TFLM.

    Returns:
        Accuracies, top-1 agreements, exact-output agreement of TFLM vs LiteRT reference, arena.
    """
    lite, ref = Runner.from_bytes(model_bytes), Runner.from_bytes(model_bytes, reference=True)
    x_q = ref.quantize(x)
    out_lite = lite.predict_raw(x_q)
    out_ref = ref.predict_raw(x_q)
    arena = arena_size or find_arena_size(model_bytes)
    out_micro = MicroRunner(model_bytes, arena).run_raw(x_q)
    top = {
        k: v.argmax(-1)
        for k, v in (("litert", out_lite), ("litert_ref", out_ref), ("tflm", out_micro))
    }
    res = {
        "samples": int(len(x)),
        "arena_bytes": int(arena),
        "accuracy_litert": float((top["litert"] == y).mean()),
        "accuracy_tflm": float((top["tflm"] == y).mean()),
        "top1_agreement_tflm_litert": float((top["tflm"] == top["litert"]).mean()),
        "exact_outputs_tflm_vs_litert_ref": float(np.mean(np.all(out_micro == out_ref, axis=-1))),
        "max_abs_diff_tflm_vs_litert_ref": int(np.abs(out_micro.astype(np.int64) - out_ref).max()),
    }
    if device_bytes is not None:
        out_device = MicroRunner(device_bytes, arena).run_raw(x_q)
        res["device_model"] = {
            "bytes": len(device_bytes),
            "full_bytes": len(model_bytes),
            "saved_bytes": len(model_bytes) - len(device_bytes),
            "bit_exact_tflm": int(np.all(out_device == out_micro, axis=-1).sum()),
            "samples": int(len(x)),
        }
    if keras_model is not None:
        k_top = keras_model.predict(x, batch_size=256, verbose=0).argmax(-1)
        res.update(
            accuracy_keras=float((k_top == y).mean()),
            top1_agreement_keras_litert=float((k_top == top["litert"]).mean()),
            top1_agreement_keras_tflm=float((k_top == top["tflm"]).mean()),
        )
    return res


def run_export(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    firmware_dir: str | Path | None = None,
    overrides: dict | None = None,
    sets=(),
) -> dict:
    """`kdq_tf export`: convert, embed metadata, generate C, verify, report. Returns the report."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KdqError(f"run directory {run_dir} does not exist")
    cfg = run_config(run_dir, overrides or {}, sets)
    e = cfg.export
    out = Path(out_dir) if out_dir else run_dir / "export"
    if e.compress != "none" and e.mode not in ("int8", "int16x8"):
        raise KdqError(
            f"--compress {e.compress} needs an integer model (--int8 or --int16x8), got --{e.mode}"
        )
    if firmware_dir and e.mode not in ("int8", "int16x8"):
        raise KdqError(
            f"--firmware needs an integer model (--int8 or --int16x8), got --{e.mode}: "
            "TFLite-Micro "
            "firmware here runs quantized models"
        )
    for target in (out, Path(firmware_dir) if firmware_dir else None):
        if target is not None:
            _check_writable(target)
    # 1. Model and data.
    rm = load_run_model(run_dir, cfg)
    data = load_dataset(cfg.data, seed=cfg.run.seed)
    rep, _ = data.sample("train", e.calib_samples, seed=cfg.run.seed)
    # 2. Convert: the asked mode, plus float32 for the size ratio.
    t0 = time.perf_counter()
    meta = metadata_for(data.info)
    needs_rep = rm.kind == "float" and e.mode in ("int8", "int16x8")
    model_bytes = flatbuf.embed_metadata(
        to_tflite(rm.model, e.mode, rep if needs_rep else None), meta
    )
    float_bytes = to_tflite(rm.model, "float32") if e.mode != "float32" else model_bytes
    ops = flatbuf.op_names(model_bytes)
    device_bytes = (
        flatbuf.strip_for_device(model_bytes) if e.mode in ("int8", "int16x8") else model_bytes
    )
    report = {
        "source_model": str(rm.path),
        "source_kind": rm.kind,
        "mode": e.mode,
        "ops": ops,
        "run_dir": str(run_dir.resolve()),
        "sizes": {
            "tflite_bytes": len(model_bytes),
            "float32_tflite_bytes": len(float_bytes),
            "float32_over_this": round(len(float_bytes) / len(model_bytes), 3),
            "weights_bytes": flatbuf.weight_bytes(model_bytes),
            # what TF-MOT measures sparsity with: zeros compress, a dense file does not
            "gzip_bytes": len(gzip.compress(model_bytes, 9)),
            "overhead_bytes": len(model_bytes) - flatbuf.weight_bytes(model_bytes),
        },
        "convert_time_s": round(time.perf_counter() - t0, 2),
    }
    report["sizes"]["overhead_share"] = round(
        report["sizes"]["overhead_bytes"] / len(model_bytes), 4
    )
    # 3. Verify on LiteRT and TFLM (int8/int16 models; TFLM has no float16 weights path).
    x, y = data.sample("test", e.verify_samples, seed=cfg.run.seed)
    if e.mode in ("int8", "int16x8"):
        report["verify"] = verify(model_bytes, rm.model, x, y, device_bytes=device_bytes)
        report["weights"] = [w.to_dict() for w in compression.weight_tensors(model_bytes)]
    if e.compress == "lut":  # the device carries the compressed model from here on
        device_bytes, report["compressed"] = compression.compress_device(
            device_bytes, model_bytes, x
        )
        report["sizes"]["compressed_device_bytes"] = len(device_bytes)
    # The whole test split on LiteRT, preprocessed from the embedded metadata exactly as
    # `kdq_tf eval` does on a device, so the two figures can be compared one to one.

    full = (
        Runner.from_bytes(model_bytes)
        .predict_logits(data.info.preprocess.apply(data.x_test))
        .argmax(-1)
    )
    report["test_accuracy_litert"] = float((full == data.y_test).mean())
    report["test_samples"] = int(len(data.y_test))
    # 4. Generate sources (C arrays, settings, resolver, sample), then write everything.
    outputs = {_FILE_FOR_MODE[e.mode]: model_bytes}
    if e.compress == "lut":
        outputs[_FILE_FOR_MODE[e.mode].replace(".tflite", "_lut.tflite")] = device_bytes
    if e.mode != "float32":
        outputs["model_float32.tflite"] = float_bytes
    generated = {}
    arena = max(
        report.get("verify", {}).get("arena_bytes", 0),
        report.get("compressed", {}).get("arena_bytes", 0),
    )
    if e.compress == "lut" and e.fuse_lut:  # the firmware's model: fused, a smaller arena
        embedded, fused = fuse.fuse_lut_convs(device_bytes)
        if fused:
            name = _FILE_FOR_MODE[e.mode].replace(".tflite", "_lut_fused.tflite")
            report["compressed"].update(fused=fused, fused_file=name)
            arena = fuse.arena_bound(report.get("verify", {}).get("arena_bytes", 0), fused, arena)
            outputs[name] = embedded
    if e.c_array or firmware_dir:
        generated = c_sources(
            device_bytes,
            e.name,
            data.info.class_names,
            x[0],
            int(y[0]),
            arena,
            model_bytes,
            fuse_lut=e.fuse_lut,
        )
    for fname, blob in outputs.items():
        files.write_bytes(out / fname, blob)
    if e.c_array:
        for fname, text in generated.items():
            files.write_text(out / fname, text)
    if firmware_dir:
        report["firmware"] = firmware_project(
            model_bytes,
            firmware_dir,
            e.name,
            data.info.class_names,
            x,
            y,
            e.firmware_samples,
            arena,
            (out / "report.json").resolve(),
            generated,
            device_bytes,
            fuse_lut=e.fuse_lut,
        )
    files.write_json(out / "report.json", report)
    files.write_text(
        out / "report.md", export_markdown(report, files.read_json(run_dir / "metrics.json"))
    )
    return report


def firmware_project(
    model_bytes: bytes,
    out_dir: str | Path,
    name: str,
    class_names,
    x: np.ndarray,
    y: np.ndarray,
    samples: int = 10,
    arena: int | None = None,
    export_report: Path | None = None,
    generated: dict | None = None,
    device_bytes: bytes | None = None,
    exact_arena: bool = False,
    fuse_lut: bool = True,
) -> dict:
    """Writes a TFLite-Micro firmware folder for an integer `.tflite` (bytes in, files out).

    The device gets the stripped flatbuffer and the first `samples` of `x` (normalised
    floats, quantized here with the model's input parameters) with their labels `y`.

    `exact_arena`: use `arena` as the tensor arena, without the margin `chosen_arena` adds (the
    search sizes it to what the target measured it uses).

    `fuse_lut`: embed a LUT-compressed model with its DECODE -> CONV_2D pairs fused
    (`kdq_tf.device.fuse`); False keeps TFLM's DECODE operators, as before the fused kernel.

    Returns:
        What the folder's firmware.json records.
    """
    device_bytes = device_bytes or flatbuf.strip_for_device(model_bytes)
    embedded, fused = fuse.fuse_lut_convs(device_bytes) if fuse_lut else (device_bytes, [])
    if not arena:
        arena = find_arena_size(device_bytes)
        if fused:  # the interpreter cannot load the fused model: bound its arena
            dense = find_arena_size(flatbuf.strip_for_device(model_bytes))
            arena = fuse.arena_bound(dense, fused, arena)
    generated = generated or c_sources(
        device_bytes, name, class_names, x[0], int(y[0]), arena, model_bytes, exact_arena, fuse_lut
    )
    n = min(samples, len(x))
    x_q = Runner.from_bytes(model_bytes, reference=True).quantize(x[:n])
    if x_q.dtype not in (np.int8, np.int16):
        raise KdqError(
            f"firmware needs an integer model (int8 or int16x8 input); this one takes {x_q.dtype}"
        )
    mode = "int16x8" if x_q.dtype == np.int16 else "int8"
    return write_firmware(
        out_dir,
        name,
        generated,
        embedded,
        x_q,
        y[:n],
        flatbuf.op_names(embedded),
        arena if exact_arena else chosen_arena(arena),
        class_names,
        export_report=export_report,
        mode=mode,
        check_model=device_bytes if embedded != device_bytes else None,
    )


def chosen_arena(host_arena: int) -> int:
    """`kTensorArenaSize`: 25% + 1 KiB over the host figure, as targets differ in alignment and
    kernel scratch needs (the host is a safe upper bound for 32-bit targets: 8,048 B on the
    host against 6,932 B used on a Cortex-M4 in ../shared/tflm's measurements)."""
    return int(host_arena * 1.25) + 1024 if host_arena else 64 * 1024


def c_sources(
    model_bytes: bytes,
    name: str,
    class_names,
    sample_x: np.ndarray,
    sample_y: int,
    arena: int,
    io_model: bytes | None = None,
    exact_arena: bool = False,
    fuse_lut: bool = True,
) -> dict[str, str]:
    """All generated C/C++ files for a model, keyed by file name.

    `io_model`: the model LiteRT reads the input/output tensors from, when `model_bytes` is
    a LUT-compressed device model, which only TFLM loads. The C array carries that model with
    its DECODE -> CONV_2D pairs fused (`kdq_tf.device.fuse`) unless `fuse_lut` is False.
    """
    r = Runner.from_bytes(io_model or model_bytes)
    embedded = fuse.fuse_lut_convs(model_bytes)[0] if fuse_lut else model_bytes
    header, source = carray.model_data(embedded, name)
    margin = arena if exact_arena else chosen_arena(arena)
    return {
        "model_data.h": header,
        "model_data.cc": source,
        "model_settings.h": carray.model_settings(
            name,
            tensor_spec(r.input_details),
            tensor_spec(r.output_details),
            list(class_names),
            margin,
        ),
        "model_ops.h": carray.model_ops(name, flatbuf.op_names(embedded)),
        "sample_input.h": carray.sample_input(
            name, np.asarray(sample_x, np.float32), sample_y, class_names[sample_y]
        ),
    }


def _check_writable(path: Path) -> None:
    # A real probe, not os.access: root passes access checks on read-only mounts.
    if path.exists() and not path.is_dir():
        raise KdqError(f"output path {path} is an existing file; pass a folder")
    # Probe the nearest existing ancestor without creating anything: a failed export
    # must leave the file system as it found it.
    base = path
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        if not base.is_dir():
            raise NotADirectoryError(20, "a parent is a file, not a folder")
        import tempfile

        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as err:
        raise KdqError(f"cannot write to output folder {path}: {err.strerror}") from None
