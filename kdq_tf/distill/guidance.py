"""Teacher guidance: where the soft targets come from.

Modes:
    online        the teacher runs on every batch, on the augmented view the student sees.
    cached        the teacher's float logits for train/val, computed once, kept in the run dir.
    cached-int8   the same, stored as int8 with a per-sample scale (4x smaller).
    teacher-int8  the cache is produced by a full-int8 TFLite teacher on LiteRT.

`views=K` (cached modes) adds the teacher's logits for K fixed augmented views of every
training image: augmentation at cached cost, with the teacher and the student seeing the
same image (the views are rebuilt from their seeds, byte for byte).

A cache records fingerprints of the teacher weights and of the data; a cache whose
fingerprints differ is rebuilt, never silently reused. The cache file has the format of
`kdq_tf.teacher.logits_file`, which `--teacher-logits` reads and `teacher --save-logits` writes.
"""

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdq_tf import files
from kdq_tf.data.augment import Augment
from kdq_tf.data.dataset import fingerprint
from kdq_tf.deploy.convert import to_tflite
from kdq_tf.errors import ConfigError, DataError
from kdq_tf.runtime.runner import Runner
from kdq_tf.teacher import logits_file as LF
from kdq_tf.teacher.logits_file import dequantize_logits, quantize_logits  # noqa: F401 - public helpers
from kdq_tf.training import predict_in_order

log = logging.getLogger(__name__)

MODES = ("online", "cached", "cached-int8", "teacher-int8")
# Teacher logits are computed once per cache: large batches keep a CPU's cores busy.
PREDICT_BATCH = 256


def resolve_mode(mode: str, augment: bool, views: int = 0) -> str:
    """ "auto" -> cached without augmentation or with views, online with augmentation.

    Plain cached modes hold one logit row per image, so they turn augmentation off;
    `views` brings it back at cached cost.
    """
    if mode == "auto":
        return "cached" if views or not augment else "online"
    if views and mode not in ("cached", "cached-int8"):
        raise ConfigError(f"--views {views} needs --guidance cached or cached-int8, got {mode}")
    if augment and mode != "online" and not views:
        log.warning(
            "guidance %s precomputes teacher logits per sample, so augmentation is turned off "
            "for distillation (use --views K or --guidance online to keep it)",
            mode,
        )
    return mode


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
    view_logits: np.ndarray | None = None  # (K, n_train, classes): logits of the K augmented views
    view_seed: int = 0
    view_aug: Augment | None = None
    test_logits: np.ndarray | None = None  # only from a logits file that has them

    @property
    def views(self) -> int:
        return 0 if self.view_logits is None else len(self.view_logits)


def _predict(teacher, ds) -> np.ndarray:
    return predict_in_order(teacher, ds)


def _teacher_logits_int8(
    teacher, data, calib: int, split_names: tuple[str, ...]
) -> list[np.ndarray]:
    rep, _ = data.sample("train", calib)
    runner = Runner.from_bytes(to_tflite(teacher, "int8", representative=rep))
    out = []
    for split in split_names:
        x, _ = data.split(split)
        out.append(runner.predict_logits(data.info.preprocess.apply(x), batch_size=64))
    return out


def view_logits(teacher, data, aug: Augment, views: int, seed: int) -> np.ndarray:
    """The teacher's logits on views 0..K-1 of every training image. (K, n_train, classes)"""
    out = []
    for v in range(views):
        t0 = time.perf_counter()
        out.append(_predict(teacher, data.view_pipeline(aug, v, seed, batch_size=PREDICT_BATCH)))
        log.info("teacher logits of view %d/%d in %.0fs", v + 1, views, time.perf_counter() - t0)
    return np.stack(out)


def build_guidance(
    mode: str,
    teacher,
    data,
    run_dir: Path,
    calib_samples: int = 200,
    views: int = 0,
    aug: Augment | None = None,
    view_seed: int = 0,
) -> Guidance:
    """Computes (or reuses) the teacher logits a guidance mode needs.

    Args:
        mode: one of `MODES` (already resolved from "auto").
        teacher: the float Keras teacher (one model, or a fused one).
        data: the `Dataset`.
        run_dir: where the cache file lives.
        calib_samples: representative samples for the int8 teacher.
        views: K augmented views of each training image to cache (cached modes). Defaults to 0.
        aug: the views' augmentation. Defaults to the data config's.
        view_seed: the views' base seed.

    Returns:
        A `Guidance` with the logits and the cache's size and error.
    """
    if mode == "online":
        return Guidance(mode, None, None, 0, 0.0, 0.0, False)
    aug = aug or data.augmentation()
    path = Path(run_dir) / f"teacher_logits_{mode}.npz"
    t_fp = teacher_fingerprint(teacher)
    key = fingerprint(
        data.x_train,
        data.y_train,
        data.x_val,
        np.asarray(data.info.preprocess.mean),
        np.asarray([views, view_seed]),
        np.frombuffer(repr(aug.to_dict() if views else 0).encode(), np.uint8),
    )
    if path.is_file():
        cached = LF.from_bytes(path.read_bytes(), str(path))
        if cached.teacher_fp == t_fp and cached.meta.get("cache_key") == key:
            log.info("reusing teacher logits cache %s", path)
            return _guidance(mode, cached, path.stat().st_size, 0.0, 0.0, reused=True)
        log.warning(
            "teacher logits cache %s was made for another teacher or data set; rebuilding it", path
        )
    t0 = time.perf_counter()
    if mode == "teacher-int8":
        train, val = _teacher_logits_int8(teacher, data, calib_samples, ("train", "val"))
    else:
        train = _predict(teacher, data.pipeline("train", augment=False, batch_size=PREDICT_BATCH))
        val = (
            _predict(teacher, data.pipeline("val", batch_size=PREDICT_BATCH))
            if data.info.n_val
            else np.zeros((0, train.shape[1]))
        )
    vl = view_logits(teacher, data, aug, views, view_seed) if views else None
    t = LF.TeacherLogits(
        train,
        val,
        None,
        vl,
        view_seed,
        aug.to_dict() if views else None,
        data.raw_fingerprint,
        t_fp,
        {"mode": mode, "cache_key": key},
    )
    blob, err = LF.to_bytes(t, int8=mode == "cached-int8")
    files.write_bytes(path, blob)
    g = _guidance(
        mode, LF.from_bytes(blob, str(path)), len(blob), err, time.perf_counter() - t0, reused=False
    )
    log.info(
        "teacher logits (%s%s): %d bytes, built in %.1fs, max int8 error %.4g",
        mode,
        f", {views} views" if views else "",
        g.cache_bytes,
        g.build_time_s,
        err,
    )
    return g


def from_file(path: str | Path, data, mode: str, views: int = 0) -> Guidance:
    """Guidance from a `--teacher-logits` file, checked against the data.

    Raises:
        DataError: the file does not fit the data (counts, classes, fingerprint, NaN).
        ConfigError: `views` asks for more views than the file has, or an online mode.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"teacher logits file {p} does not exist")
    if mode in ("online", "teacher-int8"):
        raise ConfigError(
            f"--teacher-logits gives precomputed logits; --guidance {mode} needs a teacher model "
            "(use cached or cached-int8)"
        )
    if views and data.config.mixup:
        raise ConfigError(
            f"--views {views} from {p}: a logits file holds unmixed views, so --mixup "
            f"{data.config.mixup} would not reach the student; cache mixed views in the run "
            "from a teacher model (--teacher ... --guidance cached-int8 --views K)"
        )
    t = LF.for_split(LF.from_bytes(p.read_bytes(), str(p)), data, str(p))
    have = 0 if t.views is None else len(t.views)
    if views > have:
        raise ConfigError(f"--views {views} asks for more augmented views than {p} holds ({have})")
    t = dataclasses.replace(t, views=t.views[:views] if views else None)
    return _guidance(mode, t, p.stat().st_size, 0.0, 0.0, reused=True)


def _guidance(
    mode: str, t: "LF.TeacherLogits", nbytes: int, err: float, seconds: float, reused: bool
) -> Guidance:
    aug = Augment(**t.views_aug) if t.views is not None and t.views_aug else None
    return Guidance(
        mode, t.train, t.val, nbytes, err, seconds, reused, t.views, t.views_seed, aug, t.test
    )


def save_logits(
    teacher,
    data,
    views: int = 0,
    aug: Augment | None = None,
    view_seed: int = 0,
    int8: bool = True,
    meta: dict | None = None,
) -> tuple[bytes, float]:
    """`teacher --save-logits`: logits for every training row (raw order), the test split and K
    views.

    The train rows are in the data set's own order (train and val together), so the file
    serves any seed's split. Returns `(npz bytes, max int8 error)`.
    """
    aug = aug or data.augmentation()
    if views and aug.mixup:
        raise ConfigError(
            f"--views {views} with --mixup {aug.mixup}: a mixed view's partner is one of its "
            "split's training images, and a logits file serves every split; cache mixed views "
            "in the run instead (kdq_tf distill --teacher ... --guidance cached-int8 --views K)"
        )
    n = data.info.n_train + data.info.n_val
    train = _predict(teacher, data.pipeline("train", augment=False, batch_size=PREDICT_BATCH))
    rows = np.zeros((n, train.shape[1]), np.float32)
    rows[data.train_index] = train
    if data.info.n_val:
        rows[data.val_index] = _predict(teacher, data.pipeline("val", batch_size=PREDICT_BATCH))
    test = _predict(teacher, data.pipeline("test", batch_size=PREDICT_BATCH))
    vl = None
    if views:
        full = np.zeros((views, n, train.shape[1]), np.float32)
        full[:, data.train_index] = view_logits(teacher, data, aug, views, view_seed)
        if data.info.n_val:
            full[:, data.val_index] = _val_views(teacher, data, aug, views, view_seed)
        vl = full
    t = LF.TeacherLogits(
        rows,
        None,
        test,
        vl,
        view_seed,
        aug.to_dict() if views else None,
        data.raw_fingerprint,
        teacher_fingerprint(teacher),
        meta or {},
    )
    return LF.to_bytes(t, int8=int8)


def _val_views(teacher, data, aug: Augment, views: int, seed: int) -> np.ndarray:
    # The val rows' views, so that a file made from one split serves every other split too.
    swapped = dataclasses.replace(
        data, x_train=data.x_val, y_train=data.y_val, train_index=data.val_index
    )
    return view_logits(teacher, swapped, aug, views, seed)
