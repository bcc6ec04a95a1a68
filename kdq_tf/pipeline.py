"""The one place that knows the stage order and writes the run directory.

Run directory:
    config.json      resolved config
    metrics.json     per-stage metrics, merged as stages finish
    report.md        results table
    teacher.keras    trained or user teacher
    ckpt/            per-epoch checkpoints (for --resume)
    tb/              TensorBoard logs
"""

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdq_tf import files
from kdq_tf.config import Config
from kdq_tf.errors import KdqError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def metrics(self) -> dict:
        return files.read_json(self.metrics_path)

    def update_metrics(self, key: str, value: dict) -> dict:
        m = self.metrics()
        m[key] = value
        files.write_json(self.metrics_path, m)
        return m


def prepare_run_dir(cfg: Config) -> RunDir:
    """Creates (or reopens with --resume) the run directory and saves the resolved config.

    Raises:
        KdqError: the path is a file, is not writable, or holds an earlier run and
            neither --resume nor --overwrite was given.
    """
    out = Path(cfg.run.out)
    if out.exists() and not out.is_dir():
        raise KdqError(f"output path {out} is an existing file; pass a folder to --out")
    if (out / "config.json").is_file() and not (cfg.run.resume or cfg.run.overwrite):
        raise KdqError(f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise KdqError(f"cannot write to output folder {out}: {e.strerror}") from None
    if cfg.run.overwrite and not cfg.run.resume:
        shutil.rmtree(out / "ckpt", ignore_errors=True)
        (out / "metrics.json").unlink(missing_ok=True)
    old = files.read_json(out / "config.json")
    if cfg.run.resume and old and old != cfg.to_dict():
        log.warning("resuming %s with a config that differs from the saved one", out)
    files.write_text(out / "config.json", cfg.to_json() + "\n")
    return RunDir(out)


def seed_everything(seed: int) -> None:
    from kdq_tf._keras import keras

    keras.utils.set_random_seed(seed)


def predict_logits(model, data, split: str = "test") -> np.ndarray:
    """The model's logits on a split, in order. (N, classes)"""
    return model.predict(data.pipeline(split), verbose=0)


def evaluate(model, data, split: str = "test") -> dict:
    """Accuracy, macro precision/recall/F1 and parameter count on a held-out split."""
    from kdq_tf.report import classification_metrics

    logits = predict_logits(model, data, split)
    _, y = data.split(split)
    m = classification_metrics(y, logits.argmax(-1), data.info.num_classes).to_dict()
    m["params"] = int(model.count_params())
    m["split"] = split
    return m


def teacher_stage(cfg: Config, run: RunDir, data):
    """Loads the user's teacher, reuses a finished one (--resume), or trains ResNet50.

    Returns:
        `(teacher_model, teacher_metrics)`.
    """
    from kdq_tf.models import teacher as T
    from kdq_tf.training import fit_phases

    path = run.path / "teacher.keras"
    info = data.info
    if cfg.teacher.path:
        model = T.load_teacher(cfg.teacher.path, info.input_shape, info.num_classes, cfg.teacher.unsafe_load)
        metrics = {**evaluate(model, data), "source": str(cfg.teacher.path), "train_time_s": 0.0}
        run.update_metrics("teacher", metrics)
        return model, metrics
    done = run.metrics().get("teacher")
    if cfg.run.resume and path.is_file() and done:
        log.info("teacher already trained in %s; reusing it", path)
        return T.load_teacher(path, info.input_shape, info.num_classes), done
    raw_max = 255.0 if data.x_train.dtype == np.uint8 else 1.0
    model = T.build_teacher(info.input_shape, info.num_classes, cfg.teacher, info.preprocess, raw_max)
    steps = int(np.ceil(info.n_train / cfg.data.batch_size))
    t0 = time.perf_counter()
    val = data.pipeline("val") if info.n_val else None
    result = fit_phases(model, T.teacher_phases(model, cfg.teacher, steps),
                        data.pipeline("train", training=True, seed=cfg.run.seed), val,
                        run_dir=run.path, stage="teacher", resume=cfg.run.resume)
    train_time = time.perf_counter() - t0
    files.save_keras(model, path)
    metrics = {**evaluate(model, data), "source": f"ResNet50 weights={cfg.teacher.weights}",
               "train_time_s": round(train_time, 2), "epochs_run": result["epochs"],
               "input_size": cfg.teacher.input_size}
    run.update_metrics("teacher", metrics)
    return model, metrics


def write_report(run: RunDir) -> str:
    """Writes report.md from metrics.json and returns the table."""
    from kdq_tf.report import results_table

    table = results_table(run.metrics())
    files.write_text(run.path / "report.md", f"# kdq_tf run: {run.path}\n\n{table}\n")
    return table


def run_teacher(cfg: Config) -> tuple[RunDir, dict]:
    """`kdq_tf teacher`: data -> teacher -> metrics.json + report.md."""
    from kdq_tf.data import load_dataset

    data = load_dataset(cfg.data, seed=cfg.run.seed)  # validate inputs before touching the output folder
    run = prepare_run_dir(cfg)
    seed_everything(cfg.run.seed)
    _, metrics = teacher_stage(cfg, run, data)
    write_report(run)
    return run, metrics
