"""Writes a TFLite-Micro firmware project: the template (package data) plus generated files.

Beside the sources go what `kdq_tf firmware run` compares against: the device flatbuffer,
the embedded test inputs (already quantized) and `firmware.json`.
"""

import io
import string
from pathlib import Path

import numpy as np

from kdq_tf import files
from kdq_tf.device import carray, tflm_tree

# Package data (pyproject.toml), so a wheel install writes firmware as a checkout does.
TEMPLATE_DIR = Path(__file__).resolve().parent / "template"
TEMPLATE_FILES = (
    "main.cc",
    "timer.h",
    "profiler.h",
    "kdq_decode.cc",
    "kdq_decode.h",
    "kdq_lut_conv.cc",
    "kdq_lut_conv.h",
    "Makefile",
    "CMakeLists.txt",
    "README.md",
    "cortex_m/startup.c",
    "cortex_m/sections.ld",
    "cortex_m/mps2_an386.ld",
    "cortex_m/mps2_an500.ld",
    "cortex_m/mps2_an505.ld",
    "cortex_m/mps3_an547.ld",
)
DEVICE_MODEL = "model_device.tflite"
CHECK_MODEL = "model_check.tflite"  # what the Python interpreter runs when it cannot run the above


def render_template(name: str) -> dict[str, str]:
    """The template files with `${name}` replaced by the C identifier."""
    ident = carray.c_identifier(name)
    return {
        f: string.Template((TEMPLATE_DIR / f).read_text()).safe_substitute(name=ident)
        for f in TEMPLATE_FILES
    }


def write_firmware(
    out_dir: str | Path,
    name: str,
    generated: dict[str, str],
    device_model: bytes,
    x_q: np.ndarray,
    labels: np.ndarray,
    ops: list[str],
    arena_bytes: int,
    class_names,
    export_report: Path | None = None,
    mode: str = "int8",
    check_model: bytes | None = None,
) -> dict:
    """Writes template + generated files + the check data (each file atomically) into `out_dir`.

    Args:
        generated: export's C sources (model_data, model_settings, model_ops, sample_input).
        device_model: the flatbuffer in model_data.cc, kept as a file (the profile reads its
            operators, and the comparison runs it unless `check_model` is given).
        check_model: the model the Python TFLM interpreter runs for the comparison, when it
            cannot run `device_model` (kdq_tf.device.fuse's operators): same outputs, bit for bit.
        x_q, labels: the test inputs embedded in test_samples.h, already quantized.
        arena_bytes: `kTensorArenaSize` of model_settings.h.

    Returns:
        What firmware.json records (name, samples, arena, files).
    """
    out = Path(out_dir)
    ident = carray.c_identifier(name)
    texts = {
        **render_template(name),
        **generated,
        "test_samples.h": carray.test_samples(name, x_q, labels),
        "tflm_sources.mk": tflm_tree.sources_mk(ops),
    }
    blob = io.BytesIO()
    np.savez(blob, x_q=x_q, y=np.asarray(labels, np.int64))
    info = {
        "name": ident,
        "mode": mode,
        "ops": ops,
        "samples": len(x_q),
        "model_file": DEVICE_MODEL,
        "model_bytes": len(device_model),
        **({"check_model_file": CHECK_MODEL} if check_model is not None else {}),
        "arena_bytes": int(arena_bytes),
        "class_names": list(class_names),
        "export_report": str(export_report) if export_report else None,
    }
    for fname, text in texts.items():
        files.write_text(out / fname, text)
    files.write_bytes(out / DEVICE_MODEL, device_model)
    if check_model is not None:
        files.write_bytes(out / CHECK_MODEL, check_model)
    files.write_bytes(out / "test_samples.npz", blob.getvalue())
    files.write_json(out / "firmware.json", info)
    return {**info, "dir": str(out)}
