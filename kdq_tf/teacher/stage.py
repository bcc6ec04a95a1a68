"""The teacher stage of a run: train the ResNet50 (or CNN) recipe, load or fuse the user's
teachers, or read precomputed logits; and the teacher's logits file (`kdq_tf teacher
--save-logits`). `pipeline.py` calls it first.
"""

import logging
import time
from pathlib import Path

import numpy as np

from kdq_tf import files
from kdq_tf.config import Config
from kdq_tf.distill import guidance as G
from kdq_tf.errors import KdqError, ModelError
from kdq_tf.models import teacher as T
from kdq_tf.report import classification_metrics
from kdq_tf.runs import RunDir, evaluate, val_accuracy
from kdq_tf.teacher import fusion as TS
from kdq_tf.teacher import recipe as TT
from kdq_tf.training import fit_phases

log = logging.getLogger(__name__)


def teacher_stage(cfg: Config, run: RunDir, data, user_teacher=None):
    """Uses the user's teacher(s), reuses a finished one (--resume), or trains ResNet50.

    Args:
        user_teacher: what `load_user_teacher` returned, if it was called already.

    Returns:
        `(teacher_model, teacher_metrics)`.
    """
    path = run.path / "teacher.keras"
    info = data.info
    if cfg.teacher.path:
        model, members = user_teacher if user_teacher is not None else load_user_teacher(cfg, data)
        metrics = {
            **evaluate(model, data),
            "val_accuracy": val_accuracy(model, data),
            "source": str(cfg.teacher.path),
            "train_time_s": 0.0,
        }
        if members:
            metrics.update(members=members, fusion=cfg.teacher.fusion)
        run.update_metrics("teacher", metrics)
        return model, metrics
    done = run.metrics().get("teacher")
    if cfg.run.resume and path.is_file() and done:
        log.info("teacher already trained in %s; reusing it", path)
        return T.load_teacher(path, info.input_shape, info.num_classes), done
    raw_max = 255.0 if data.x_train.dtype == np.uint8 else 1.0
    tc = cfg.teacher
    model, precision = TT.build_teacher_for_training(
        info.input_shape, info.num_classes, tc, info.preprocess, raw_max
    )
    if tc.init:  # on --resume, BackupAndRestore then restores the interrupted epoch over it
        TS.warm_start(model, tc.init, info.input_shape, info.num_classes)
    batch = tc.batch_size or cfg.data.batch_size
    aug = TT.teacher_augment(tc, cfg.data)
    steps = int(np.ceil(info.n_train / batch))
    t0 = time.perf_counter()
    val = data.pipeline("val", batch_size=batch) if info.n_val else None
    train = data.pipeline(
        "train",
        training=True,
        seed=cfg.run.seed,
        batch_size=batch,
        augment=aug if aug is not None else False,
    )
    snaps = (
        [TT.Snapshots(run.path / "teacher_snapshots", tc.snapshot_every)]
        if tc.snapshot_every
        else []
    )
    result = fit_phases(
        model,
        TT.teacher_phases(model, tc, steps),
        train,
        val,
        run_dir=run.path,
        stage="teacher",
        resume=cfg.run.resume,
        callbacks=snaps,
    )
    train_time = time.perf_counter() - t0
    files.save_keras(model, path)
    metrics = {
        **evaluate(model, data),
        "val_accuracy": val_accuracy(model, data),
        "source": (
            f"ResNet50 weights={tc.weights}" if tc.arch == "resnet50" else f"cnn width={tc.width}"
        )
        + (f", warm start {tc.init}" if tc.init else ""),
        "train_time_s": round(train_time, 2),
        "epochs_run": result["epochs"],
        "arch": tc.arch,
        "input_size": tc.input_size,
        "adapter": tc.adapter,
        "precision": precision,
        "batch_size": batch,
        "augment": aug.to_dict() if aug else None,
    }
    run.update_metrics("teacher", metrics)
    return model, metrics


def load_user_teacher(cfg: Config, data):
    """The --teacher model(s), checked against the data; None when ResNet50 is to be trained.

    Several teachers are fused into one model (kdq_tf.teacher.fusion); their weights come from
    `teacher.fusion_weights` or from each member's validation accuracy.

    Returns:
        `(model, members)`: members lists each member's source, weight and val/test
        accuracy (empty for a single teacher).
    """
    if not cfg.teacher.path:
        if cfg.teacher.init and not Path(cfg.teacher.init).exists():
            raise ModelError(
                f"teacher.init {cfg.teacher.init} does not exist; give a teacher .keras, a run "
                "folder or a snapshot .weights.h5"
            )
        return None
    info = data.info
    specs = TS.member_paths(cfg.teacher.path)
    given = TS.parse_weights(cfg.teacher.fusion_weights, len(specs))
    members = [
        TS.load_member(s, info.input_shape, info.num_classes, cfg.teacher.unsafe_load)
        for s in specs
    ]
    if len(members) == 1:
        return members[0].model, []
    rows = [
        {
            "source": m.source,
            "val_accuracy": val_accuracy(m.model, data),
            "accuracy": evaluate(m.model, data)["accuracy"],
        }
        for m in members
    ]
    weights = given or TS.weights_from_accuracy([r["val_accuracy"] or r["accuracy"] for r in rows])
    for r, w in zip(rows, weights):
        r["weight"] = w
    log.info(
        "fusing %d teachers (%s), weights %s",
        len(members),
        cfg.teacher.fusion,
        ", ".join(f"{w:.3f}" for w in weights),
    )
    return TS.fused_model(members, weights, cfg.teacher.fusion), rows


def logits_teacher_metrics(cfg: Config, data, guidance) -> dict:
    """Teacher metrics from a --teacher-logits file: accuracy of its logits on val (and test if
    present)."""

    k = data.info.num_classes
    m = {"source": f"logits file {cfg.teacher.logits}", "train_time_s": 0.0, "params": None}
    if guidance.test_logits is not None:
        m.update(
            classification_metrics(data.y_test, guidance.test_logits.argmax(-1), k).to_dict(),
            split="test",
        )
    if data.info.n_val:
        m["val_accuracy"] = classification_metrics(
            data.y_val, guidance.val_logits.argmax(-1), k
        ).accuracy
    return m


def write_logits_file(cfg: Config, data, teacher, metrics: dict, path: Path) -> dict:
    """Writes the teacher's logits file with its provenance; returns the provenance."""

    t0 = time.perf_counter()
    aug = data.augmentation()
    prov = {
        "config": cfg.to_dict(),
        "teacher_accuracy": metrics.get("accuracy"),
        "teacher_val_accuracy": metrics.get("val_accuracy"),
        "views": cfg.distill.views,
        "views_augment": aug.to_dict() if cfg.distill.views else None,
        "data_fingerprint": data.raw_fingerprint,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    blob, err = G.save_logits(
        teacher, data, cfg.distill.views, aug, cfg.run.seed, int8=True, meta=prov
    )
    files.write_bytes(path, blob)
    prov.update(
        bytes=len(blob), max_abs_int8_error=err, build_time_s=round(time.perf_counter() - t0, 1)
    )
    log.info(
        "wrote %s: %d bytes (%d views), max int8 error %.4g",
        path,
        len(blob),
        cfg.distill.views,
        err,
    )
    return prov


def check_logits_path(path: Path) -> None:
    """Refuses a --save-logits path that is a folder, not .npz, or in a missing folder."""
    if path.is_dir():
        raise KdqError(f"--save-logits {path} is a folder; give a file name ending in .npz")
    if path.suffix != ".npz":
        raise KdqError(f"--save-logits expects a .npz file name, got {path}")
    if not path.parent.is_dir():
        raise KdqError(f"--save-logits: folder {path.parent} does not exist")
