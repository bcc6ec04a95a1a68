"""One student training step of a run: the student under the Distiller (soft + hard loss), or
its scratch twin on hard labels, with checkpoints for --resume.

The distill, structure and QAT stages all train through `train_student`.
"""

import time

from kdq_tf._keras import keras
from kdq_tf.config import Config
from kdq_tf.distill.distiller import Distiller
from kdq_tf.distill.losses import LossWeights
from kdq_tf.runs import steps_per_epoch
from kdq_tf.training import Phase, cosine_adam, fit_phases


def _distill_phase(cfg: Config, epochs: int, lr: float, steps: int) -> list[Phase]:
    d = cfg.distill
    weights = LossWeights.from_config(d.lam, d.alpha)

    def prepare(m):
        m.compile(
            optimizer=cosine_adam(lr, epochs, steps),
            temperature=d.temperature,
            loss_weights=weights,
            soft_loss=d.soft_loss,
            hard_loss=d.hard_loss,
            soft_params=d.soft_params(),
        )

    return [Phase("train", epochs, prepare)]


def _distill_inputs(cfg: Config, data, guidance):
    """Train/val pipelines and steps per epoch.

    `(x, y)` for online guidance, `(x, (y, teacher_logits))` for cached; with K views the
    training pipeline is endless and each epoch of `steps` batches is one view.
    """
    seed = cfg.run.seed
    if guidance.train_logits is None:
        return (
            data.pipeline("train", training=True, seed=seed),
            data.pipeline("val") if data.info.n_val else None,
            None,
        )
    val = data.pipeline("val", extra=guidance.val_logits) if data.info.n_val else None
    if guidance.views:
        train = data.views_training_pipeline(
            guidance.view_aug, guidance.view_logits, guidance.view_seed, seed=seed
        )
        return train, val, steps_per_epoch(cfg, data)
    train = data.pipeline(
        "train", training=True, extra=guidance.train_logits, augment=False, seed=seed
    )
    return train, val, None


def train_student(
    cfg, run, data, stage, student, teacher, guidance, epochs, lr, callbacks=None
) -> dict:
    """Fits a student under the Distiller; returns timings and epochs.

    Args:
        teacher: the teacher model for online guidance; unused when `guidance` holds logits.
    """
    distiller = Distiller(student, teacher if guidance.train_logits is None else None)
    train, val, steps = _distill_inputs(cfg, data, guidance)
    t0 = time.perf_counter()
    phases = _distill_phase(cfg, epochs, lr, steps_per_epoch(cfg, data))
    result = fit_phases(
        distiller,
        phases,
        train,
        val,
        run_dir=run.path,
        stage=stage,
        resume=cfg.run.resume,
        steps_per_epoch=steps,
        callbacks=callbacks,
    )
    return {"train_time_s": round(time.perf_counter() - t0, 2), "epochs_run": result["epochs"]}


def fit_hard(cfg, run, data, model, stage: str, epochs: int, lr: float, aug) -> None:
    """Fits `model` on hard labels only (the scratch twin), same schedule as the student.

    Under mixup the twin trains as mixup does (Zhang et al. 2018): on the mixed images with
    their labels mixed by the same weight.
    """
    resolved = data.resolve_augment(aug, training=True)
    mix = resolved is not None and resolved.mixup > 0
    L, K = keras.losses, keras.metrics

    def prepare(m):
        m.compile(
            optimizer=cosine_adam(lr, epochs, steps_per_epoch(cfg, data)),
            loss=(L.CategoricalCrossentropy if mix else L.SparseCategoricalCrossentropy)(
                from_logits=True
            ),
            metrics=[(K.CategoricalAccuracy if mix else K.SparseCategoricalAccuracy)("accuracy")],
        )

    val = data.pipeline("val", soft_labels=mix) if data.info.n_val else None
    fit_phases(
        model,
        [Phase("train", epochs, prepare)],
        data.pipeline("train", training=True, augment=aug, seed=cfg.run.seed, soft_labels=mix),
        val,
        run_dir=run.path,
        stage=stage,
        resume=cfg.run.resume,
    )
