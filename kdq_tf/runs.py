"""Run helpers that every stage shares: the run folder, seeding, the strategy scope, evaluation,
student loading.

Stages (teacher, distill, structure, export) import these; `pipeline.py` orders the stages.

Run directory:
    config.json      resolved config
    metrics.json     per-stage metrics, merged as stages finish
    report.md        results table
    teacher.keras    trained or user teacher
    ckpt/            per-epoch checkpoints (for --resume)
    tb/              TensorBoard logs
"""

import dataclasses
import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdq_tf import files
from kdq_tf._keras import keras, tf
from kdq_tf.config import Config
from kdq_tf.distribute import Cluster, cluster_from_env, make_strategy, output_dir_for
from kdq_tf.errors import KdqError
from kdq_tf.report import classification_metrics, results_table
from kdq_tf.training import predict_in_order

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
        raise KdqError(
            f"{out} already holds a run; pass --resume to continue it or --overwrite to replace it"
        )
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
    """Seeds Python, numpy and TF, and turns on TF op determinism: same seed, same metrics on
    CPU."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@contextmanager
def distributed(cfg: Config):
    """Enters the run's tf.distribute strategy; yields the config with this worker's output folder.

    The chief writes to `run.out`; other workers of a multi-worker run write to a
    temporary folder that is removed afterwards (the TF multi-worker guide's rule).
    """
    strategy = make_strategy(cfg.run.strategy, cfg.run.cpu_devices)
    cluster = cluster_from_env() if cfg.run.strategy == "multiworker" else Cluster(True, "local")
    out = output_dir_for(cfg.run.out, cluster)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out=out))
    try:
        with strategy.scope():
            yield cfg
    finally:
        if not cluster.is_chief:
            shutil.rmtree(out, ignore_errors=True)


def predict_logits(model, data, split: str = "test") -> np.ndarray:
    """The model's logits on a split, in order. (N, classes)"""
    return predict_in_order(model, data.pipeline(split))


def evaluate(model, data, split: str = "test") -> dict:
    """Accuracy, macro precision/recall/F1 and parameter count on a held-out split.

    The count is of the weights the model carries for inference: a clustering or pruning
    wrapper's centroids, indices and masks are training state, not parameters.
    """
    logits = predict_logits(model, data, split)
    _, y = data.split(split)
    m = classification_metrics(y, logits.argmax(-1), data.info.num_classes).to_dict()
    m["params"] = count_params(model)
    m["split"] = split
    return m


def count_params(model) -> int:
    """Parameters the model carries: its weights less the training state of TF-MOT wrappers
    (cluster centroids and indices, pruning masks and steps, quantizer min/max)."""
    return int(sum(np.prod(w.shape) for w in model.weights if not _wrapper_state(w.name)))


# TF-MOT's training state: clustering (cluster_centroids_*, pulling_indices_*,
# ori_weights_vars_tf), pruning (mask, threshold, pruning_step), QAT (*_min, *_max,
# optimizer_step).
_WRAPPER_STATE = {"mask", "threshold", "pruning_step", "optimizer_step", "ori_weights_vars_tf"}


def _wrapper_state(name: str) -> bool:
    leaf = name.split("/")[-1].split(":")[0]
    return (
        leaf in _WRAPPER_STATE
        or leaf.startswith(("cluster_centroids", "pulling_indices"))
        or leaf.endswith(("_min", "_max"))
    )


def val_accuracy(model, data) -> float | None:
    """Accuracy on the validation split, None without one (selection uses val, never test)."""
    return evaluate(model, data, "val")["accuracy"] if data.info.n_val else None


def write_report(run: RunDir) -> str:
    """Writes report.md from metrics.json and returns the table."""
    table = results_table(run.metrics())
    files.write_text(run.path / "report.md", f"# kdq_tf run: {run.path}\n\n{table}\n")
    return table


def steps_per_epoch(cfg: Config, data) -> int:
    return int(np.ceil(data.info.n_train / cfg.data.batch_size))


def load_student(path: Path):
    """A saved float student (.keras), uncompiled."""
    return keras.models.load_model(path, compile=False)
