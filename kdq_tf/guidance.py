"""Teacher guidance: where the soft targets come from.

Modes:
    online        the teacher runs on every batch, on the augmented view the student sees.
    cached        the teacher's float logits for train/val, computed once, kept in the run dir.
    cached-int8   the same, stored as int8 with a per-sample scale (4x smaller).
    teacher-int8  the cache is produced by a full-int8 TFLite teacher on LiteRT.

A cache records fingerprints of the teacher weights and of the data; a cache
whose fingerprints differ is rebuilt, never silently reused.
"""

import hashlib
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdq_tf import files

log = logging.getLogger(__name__)

MODES = ("online", "cached", "cached-int8", "teacher-int8")


def resolve_mode(mode: str, augment: bool) -> str:
    """"auto" -> cached without augmentation, online with it. Cached modes turn augmentation off."""
    if mode == "auto":
        return "online" if augment else "cached"
    if augment and mode != "online":
        log.warning("guidance %s precomputes teacher logits per sample, so augmentation is turned off "
                    "for distillation (use --guidance online to keep it)", mode)
    return mode


def quantize_logits(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-sample int8: q = round(l / s), s = max|l| / 127. Returns (q, s)."""
    logits = np.asarray(logits, np.float32)
    scale = np.abs(logits).max(axis=-1) / 127.0  # (N,)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(logits / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_logits(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale[:, None].astype(np.float32)


def fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def teacher_fingerprint(teacher) -> str:
    return fingerprint(*teacher.get_weights())


@dataclass(frozen=True)
class Guidance:
    mode: str
    train_logits: np.ndarray | None  # (n_train, classes), None for online
    val_logits: np.ndarray | None
    cache_bytes: int  # bytes of the stored logits (0 for online)
    max_abs_error: float  # int8 reconstruction error vs float logits (0 where not quantized)
    build_time_s: float
    reused: bool


def _teacher_logits_float(teacher, data, split: str) -> np.ndarray:
    from kdq_tf.training import predict_in_order

    return predict_in_order(teacher, data.pipeline(split, augment=False))


def _teacher_logits_int8(teacher, data, calib: int, split_names: tuple[str, ...]) -> list[np.ndarray]:
    from kdq_tf.convert import to_tflite
    from kdq_tf.runtime import Runner

    rep, _ = data.sample("train", calib)
    runner = Runner.from_bytes(to_tflite(teacher, "int8", representative=rep))
    out = []
    for split in split_names:
        x, _ = data.split(split)
        out.append(runner.predict_logits(data.info.preprocess.apply(x), batch_size=64))
    return out


def build_guidance(mode: str, teacher, data, run_dir: Path, calib_samples: int = 200) -> Guidance:
    """Computes (or reuses) the teacher logits a guidance mode needs.

    Args:
        mode: one of `MODES` (already resolved from "auto").
        teacher: the float Keras teacher.
        data: the `Dataset`.
        run_dir: where the cache file lives.
        calib_samples: representative samples for the int8 teacher.

    Returns:
        A `Guidance` with the logits and the cache's size and error.
    """
    if mode == "online":
        return Guidance(mode, None, None, 0, 0.0, 0.0, False)
    path = Path(run_dir) / f"teacher_logits_{mode}.npz"
    t_fp = teacher_fingerprint(teacher)
    d_fp = fingerprint(data.x_train, data.y_train, data.x_val, np.asarray(data.info.preprocess.mean))
    if path.is_file():
        with np.load(path) as f:
            if str(f["teacher_fp"]) == t_fp and str(f["data_fp"]) == d_fp:
                log.info("reusing teacher logits cache %s", path)
                arrays = {k: f[k] for k in f.files}
                return _from_arrays(mode, arrays, path.stat().st_size, 0.0, 0.0, reused=True)
        log.warning("teacher logits cache %s was made for another teacher or data set; rebuilding it", path)
    t0 = time.perf_counter()
    if mode == "teacher-int8":
        train, val = _teacher_logits_int8(teacher, data, calib_samples, ("train", "val"))
    else:
        train = _teacher_logits_float(teacher, data, "train")
        val = _teacher_logits_float(teacher, data, "val") if data.info.n_val else np.zeros((0, train.shape[1]))
    arrays: dict[str, np.ndarray] = {"teacher_fp": np.asarray(t_fp), "data_fp": np.asarray(d_fp)}
    err = 0.0
    if mode == "cached-int8":
        for name, logits in (("train", train), ("val", val)):
            q, s = quantize_logits(logits)
            arrays[f"{name}_q"], arrays[f"{name}_scale"] = q, s
            if len(logits):
                err = max(err, float(np.abs(dequantize_logits(q, s) - logits).max()))
    else:
        arrays["train"], arrays["val"] = train.astype(np.float32), val.astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    files.write_bytes(path, buf.getvalue())
    g = _from_arrays(mode, arrays, path.stat().st_size, err, time.perf_counter() - t0, reused=False)
    log.info("teacher logits (%s): %d bytes, built in %.1fs, max int8 error %.4g", mode, g.cache_bytes,
             g.build_time_s, err)
    return g


def _from_arrays(mode: str, a: dict, nbytes: int, err: float, seconds: float, reused: bool) -> Guidance:
    if "train_q" in a:
        train = dequantize_logits(a["train_q"], a["train_scale"])
        val = dequantize_logits(a["val_q"], a["val_scale"])
    else:
        train, val = a["train"], a["val"]
    return Guidance(mode, train, val, nbytes, err, seconds, reused)
