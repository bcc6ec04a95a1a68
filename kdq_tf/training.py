"""Resumable Keras training in phases (e.g. head, then fine-tune).

Each phase runs `fit` under `BackupAndRestore`, which saves model and optimizer
state at every epoch end and restores it on the next `fit`; a finished phase
leaves a weights file, so `--resume` skips it. Only this module knows the
checkpoint layout under `<run>/ckpt/`.
"""

import logging
import math
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdq_tf._keras import keras, tf
from kdq_tf.errors import KdqError
from kdq_tf.files import write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    prepare: Callable[[keras.Model], None]  # sets trainable flags and compiles


class NonFiniteLoss(KdqError):
    """Raised inside fit at the first NaN/Inf loss, before the epoch's checkpoint is written."""


class StopOnNonFinite(keras.callbacks.Callback):
    """Aborts fit at the first NaN/Inf batch loss.

    Raising (rather than `stop_training`) skips the epoch-end callbacks, so the
    BackupAndRestore checkpoint keeps the last good epoch instead of NaN weights.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(f"epoch {self._epoch + 1}, batch {batch + 1}")


class EpochLog(keras.callbacks.Callback):
    """One CSV row per trained epoch (`epoch` counts within the phase), kept in step with the
    checkpoint.

    Keras's CSVLogger appends after BackupAndRestore has saved the epoch, so a kill between the
    two lost the row. This one runs before the checkpoint and, on the first epoch of a resumed
    fit, drops rows of epochs the checkpoint does not hold (a kill after the row, before the
    checkpoint): the epoch is trained again and logged once.
    """

    def __init__(self, path: Path, rows_before: int):
        super().__init__()
        self.path, self.rows_before = path, rows_before  # rows the earlier phases wrote
        self._header: list[str] | None = None
        self._rows: list[str] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._rows is None:  # `epoch` is where BackupAndRestore resumed this phase
            lines = self.path.read_text().splitlines() if self.path.is_file() else []
            self._header = lines[0].split(",") if lines else None
            self._rows = lines[1:][: self.rows_before + epoch]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._header = self._header or ["epoch", *sorted(logs)]
        values = {"epoch": epoch, **{k: float(v) for k, v in logs.items()}}
        self._rows.append(",".join(str(values.get(k, "NA")) for k in self._header))
        # The whole file each epoch, atomically: a few hundred bytes, never half a row.
        write_text(self.path, "\n".join([",".join(self._header), *self._rows]) + "\n")


def cosine_adam(lr: float, epochs: int, steps_per_epoch: int, weight_decay: float = 0.0):
    """Adam with cosine decay over the phase: the cheapest reliable schedule for short budgets.

    With `weight_decay` > 0 it is AdamW: decoupled decay (Loshchilov & Hutter 2019), which
    unlike an L2 term is not rescaled away by Adam's per-weight step sizes.
    """
    sched = keras.optimizers.schedules.CosineDecay(lr, max(1, epochs * steps_per_epoch), alpha=0.01)
    if weight_decay:
        return keras.optimizers.AdamW(sched, weight_decay=weight_decay)
    return keras.optimizers.Adam(sched)


def predict_in_order(model, ds):
    """Logits for every batch of `ds`, in order, computed without distributing the batches.

    Keras `predict` under a multi-worker strategy shards the data; teacher caches and
    metrics need every sample once, in order. (N, classes)
    """
    step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    outs = [step(batch[0] if isinstance(batch, tuple) else batch).numpy() for batch in ds]
    return np.concatenate(outs) if outs else np.zeros((0, model.output_shape[-1]), np.float32)


def one_iterator(train_ds) -> tuple:
    """`(train_ds.repeat(), batches per pass)` for a finite dataset of known length; for any
    other, `(train_ds, None)`, and Keras walks it as it is.

    Why: Keras makes a new iterator of a finite dataset every epoch, and dropping the last
    one, its parallel map and prefetch still running, stalled each epoch of a 2-core machine
    by 10-15 s (tiny_cnn on cached logits, 4 epochs of 27 s beside another training run: 150 s,
    and 103 s with one iterator). One endless iterator yields the same batches: each pass
    reshuffles and redraws its augmentation seeds as a new iterator would.
    """
    n = int(train_ds.cardinality())
    if n <= 0:  # tf.data.INFINITE_CARDINALITY (-1), UNKNOWN_CARDINALITY (-2), or empty
        return train_ds, None
    return train_ds.repeat(), n


def fit_phases(
    model: keras.Model,
    phases: list[Phase],
    train_ds,
    val_ds,
    *,
    run_dir: Path,
    stage: str,
    resume: bool,
    callbacks: list | None = None,
    verbose: int | str = "auto",
    steps_per_epoch: int | None = None,
) -> dict:
    """Trains `model` through `phases`, checkpointing each epoch.

    Args:
        model: the model to fit (a `Distiller` or a plain model).
        phases: run in order; a phase with 0 epochs is skipped.
        train_ds, val_ds: tf.data pipelines.
        run_dir: the run directory; checkpoints go to `run_dir/ckpt/<stage>_<phase>*`.
        stage: a name for logs and checkpoints ("teacher", "distill", "qat").
        resume: continue from the last finished epoch instead of starting over.
        callbacks: extra callbacks, run after the checkpointing ones.
        verbose: Keras verbosity; "auto" shows progress bars on a terminal.
        steps_per_epoch: batches per epoch, for an endless `train_ds`. Defaults to one pass.

    Returns:
        `{"epochs": {phase: epochs run now}, "history": {metric: [values]}}`.

    Raises:
        KdqError: when the loss becomes NaN/Inf (names stage and epoch; the last
            good checkpoint is kept).
    """
    if steps_per_epoch is None:
        train_ds, steps_per_epoch = one_iterator(train_ds)
    ckpt = run_dir / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    if verbose == "auto":
        verbose = 1 if sys.stderr.isatty() else 2
    history: dict[str, list[float]] = {}
    ran: dict[str, int] = {}
    for i, phase in enumerate(phases):
        done = ckpt / f"{stage}_{phase.name}.weights.h5"
        backup = ckpt / f"{stage}_{phase.name}_backup"
        phase.prepare(model)
        if resume and done.is_file():
            log.info("%s/%s already finished; loading %s", stage, phase.name, done)
            model.load_weights(done)
            ran[phase.name] = 0
            continue
        if not resume:
            shutil.rmtree(backup, ignore_errors=True)
        if phase.epochs == 0:
            ran[phase.name] = 0
            continue
        guard = StopOnNonFinite()
        rows_before = sum(p.epochs for p in phases[:i])  # no callback stops a phase early
        cbs = [
            guard,
            EpochLog(run_dir / f"{stage}_history.csv", rows_before),  # before the checkpoint
            keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False),
            keras.callbacks.TensorBoard(str(run_dir / "tb" / stage), profile_batch=0),
            *(callbacks or []),
        ]
        log.info("%s/%s: %d epochs", stage, phase.name, phase.epochs)
        try:
            h = model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=phase.epochs,
                callbacks=cbs,
                verbose=verbose,
                steps_per_epoch=steps_per_epoch,
            )
        except NonFiniteLoss as e:
            raise KdqError(
                f"{stage}/{phase.name}: loss became NaN/Inf in {e}; "
                "the last good checkpoint is kept in "
                f"{backup}. Lower the learning rate (or check the inputs), then rerun with --resume"
            ) from None
        for k, v in h.history.items():
            history.setdefault(k, []).extend(float(x) for x in v)
        ran[phase.name] = len(h.epoch)
        # Same ".weights.h5" suffix: tf_keras picks the weights format from the file name.
        tmp = done.with_name(f".tmp_{done.name}")
        model.save_weights(str(tmp))
        os.replace(tmp, done)
        shutil.rmtree(backup, ignore_errors=True)
    return {"epochs": ran, "history": history}
