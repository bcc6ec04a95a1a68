"""Teacher logits as a file: the guidance cache, `--teacher-logits` and `teacher --save-logits`.

One `.npz` format serves all three, so logits made anywhere (another framework, a GPU
machine, an earlier run) train a student here. Keys:

    train            (N, C) float32, or train_q (N, C) int8 + train_scale (N,) float32
    val, test        optional, same forms
    views            optional (K, N, C), or views_q int8 + views_scale (K, N): logits of K fixed
                     augmented views of each training image (see kdq_tf.data.augment)
    views_seed       int: the views' base seed; views_aug: JSON of the `Augment` used
    data_fp          fingerprint of the raw training images and labels
                     (kdq_tf.data.dataset.fingerprint)
    teacher_fp       fingerprint of the teacher's weights; meta: JSON (command, accuracy, ...)

`train` covers either the whole raw training set in its original order (N = all training
samples; kdq_tf cuts its own train/val split from it, so one file serves every seed), or
exactly kdq_tf's train split with `val` beside it. Bytes in, bytes out: no file I/O here.
"""

import io
import json
import zipfile
from dataclasses import dataclass, field, replace

import numpy as np

from kdq_tf.errors import DataError

FORMAT = "kdq_tf.logits/1"
SPLITS = ("train", "val", "test", "views")


def quantize_logits(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per sample: q = round(l / s), s = max|l| / 127. Returns (q, s); s has the
    leading shape."""
    logits = np.asarray(logits, np.float32)
    scale = np.abs(logits).max(axis=-1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(logits / scale[..., None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_logits(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * np.asarray(scale, np.float32)[..., None]


@dataclass(frozen=True)
class TeacherLogits:
    train: np.ndarray  # (N, C)
    val: np.ndarray | None = None
    test: np.ndarray | None = None
    views: np.ndarray | None = None  # (K, N, C)
    views_seed: int = 0
    views_aug: dict | None = None
    data_fp: str = ""
    teacher_fp: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(self.train.shape[-1])


def to_bytes(t: TeacherLogits, int8: bool = True, int8_views: bool = True) -> tuple[bytes, float]:
    """Serialises to `.npz` bytes; int8 stores one scale per sample (4x smaller).

    Views are int8 by default even when the splits are float: K copies of the training
    set's logits are the bulk of the file.

    Returns:
        `(bytes, max_abs_error)`: the largest int8 reconstruction error (0 for float).
    """
    arrays: dict[str, np.ndarray] = {
        "format": np.asarray(FORMAT),
        "data_fp": np.asarray(t.data_fp),
        "teacher_fp": np.asarray(t.teacher_fp),
        "meta": np.asarray(json.dumps(t.meta)),
        "views_seed": np.asarray(t.views_seed, np.int64),
        "views_aug": np.asarray(json.dumps(t.views_aug)),
    }
    err = 0.0
    for name in SPLITS:
        a = getattr(t, name)
        if a is None:
            continue
        if int8 or (name == "views" and int8_views):
            q, s = quantize_logits(a)
            arrays[f"{name}_q"], arrays[f"{name}_scale"] = q, s
            if a.size:
                err = max(err, float(np.abs(dequantize_logits(q, s) - a).max()))
        else:
            arrays[name] = np.asarray(a, np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # int8 logits of a confident teacher compress well
    return buf.getvalue(), err


def from_bytes(blob: bytes, source: str) -> TeacherLogits:
    """Reads and checks the arrays of a logits file.

    Raises:
        DataError: not an .npz, no train logits, wrong ranks, NaN/Inf, or splits that
            disagree on the class count.
    """
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as f:
            a = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(
            f"{source} is not a readable .npz of teacher logits ({type(e).__name__})"
        ) from None
    splits = {name: _split(a, name, source) for name in SPLITS}
    if splits["train"] is None:
        raise DataError(
            f"{source} has no 'train' (or 'train_q' + 'train_scale') logits; "
            f"keys: {', '.join(sorted(a))}"
        )
    k = splits["train"].shape[-1]
    for name, arr in splits.items():
        if arr is None:
            continue
        if arr.ndim != (3 if name == "views" else 2):
            raise DataError(
                f"{source}: {name} logits must be {'(K, N, C)' if name == 'views' else '(N, C)'}, "
                f"got shape {arr.shape}"
            )
        if arr.shape[-1] != k:
            raise DataError(
                f"{source}: {name} logits have {arr.shape[-1]} classes but train has {k}"
            )
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{source}: {name} logits contain NaN or Inf")
    if splits["views"] is not None and splits["views"].shape[1] != len(splits["train"]):
        raise DataError(
            f"{source}: views cover {splits['views'].shape[1]} samples but train has "
            f"{len(splits['train'])}"
        )
    text = {
        key: str(a[key]) if key in a else ""
        for key in ("data_fp", "teacher_fp", "meta", "views_aug")
    }
    try:
        meta = json.loads(text["meta"]) if text["meta"] else {}
        aug = json.loads(text["views_aug"]) if text["views_aug"] else None
    except json.JSONDecodeError:
        raise DataError(f"{source}: 'meta' or 'views_aug' is not JSON") from None
    return TeacherLogits(
        splits["train"],
        splits["val"],
        splits["test"],
        splits["views"],
        int(a["views_seed"]) if "views_seed" in a else 0,
        aug,
        text["data_fp"],
        text["teacher_fp"],
        meta,
    )


def _split(a: dict, name: str, source: str) -> np.ndarray | None:
    for key in (name, f"{name}_q", f"{name}_scale"):
        if key in a and not _is_number(a[key]):
            raise DataError(
                f"{source}: {key} holds {a[key].dtype} values, not numbers; teacher logits "
                "are float (or int8 with a float scale)"
            )
    if name in a:
        return np.asarray(a[name], np.float32)
    if f"{name}_q" not in a:
        return None
    q, s = a[f"{name}_q"], a.get(f"{name}_scale")
    if q.dtype != np.int8 or s is None or s.shape != q.shape[:-1]:
        raise DataError(
            f"{source}: {name}_q must be int8 with a {name}_scale of shape {q.shape[:-1]}"
        )
    return dequantize_logits(q, s)


def for_split(t: TeacherLogits, data, source: str) -> TeacherLogits:
    """Cuts the file's logits to the data's train/val/test split, after checking they describe
    this data.

    Returns:
        A `TeacherLogits` whose rows line up with `data.x_train`, `x_val` and `x_test`.

    Raises:
        DataError: class count, sample counts or data fingerprint differ from the data.
    """
    info = data.info
    if t.num_classes != info.num_classes:
        raise DataError(
            f"{source} has logits for {t.num_classes} classes "
            f"but {info.name} has {info.num_classes}; "
            "make the logits with a teacher for this data set"
        )
    if t.data_fp and data.raw_fingerprint and t.data_fp != data.raw_fingerprint:
        raise DataError(
            f"{source} was made for other training data (fingerprint {t.data_fp}, this data "
            f"{data.raw_fingerprint}); make the logits on the same data set"
        )
    n, n_rows = len(t.train), info.n_train + info.n_val
    if t.val is None and n > n_rows and data.config.limit and t.data_fp == data.raw_fingerprint:
        # --limit keeps the first rows of the very data the file was made on: keep the same rows.
        t = replace(
            t, train=t.train[:n_rows], views=None if t.views is None else t.views[:, :n_rows]
        )
        n = n_rows
    if t.val is None:
        if n != n_rows:
            raise DataError(
                f"{source} has {n} train logits but {info.name} has {n_rows} training "
                "samples; give one row per training sample, in the data set's order"
            )
        rows_tr, rows_val = data.train_index, data.val_index
        t = replace(
            t,
            train=t.train[rows_tr],
            val=t.train[rows_val],
            views=None if t.views is None else t.views[:, rows_tr],
        )
    elif (n, len(t.val)) != (info.n_train, info.n_val):
        raise DataError(
            f"{source} has {n} train and {len(t.val)} val logits but the split has {info.n_train} "
            f"and {info.n_val}; give train logits for all {n_rows} training samples instead"
        )
    if t.test is not None:
        if len(t.test) < info.n_test:
            raise DataError(
                f"{source} has {len(t.test)} test logits "
                f"but the test split has {info.n_test} samples"
            )
        t = replace(t, test=t.test[: info.n_test])
    return t


def _is_number(arr: np.ndarray) -> bool:
    return np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
