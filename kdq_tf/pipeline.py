"""The one place that knows the stage order and writes the run directory.

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
import time
from contextlib import contextmanager
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
    """Seeds Python, numpy and TF, and turns on TF op determinism: same seed, same metrics on CPU."""
    from kdq_tf._keras import keras, tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def predict_logits(model, data, split: str = "test") -> np.ndarray:
    """The model's logits on a split, in order. (N, classes)"""
    from kdq_tf.training import predict_in_order

    return predict_in_order(model, data.pipeline(split))


@contextmanager
def distributed(cfg: Config):
    """Enters the run's tf.distribute strategy; yields the config with this worker's output folder.

    The chief writes to `run.out`; other workers of a multi-worker run write to a
    temporary folder that is removed afterwards (the TF multi-worker guide's rule).
    """
    from kdq_tf.distribute import Cluster, cluster_from_env, make_strategy, output_dir_for

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


def evaluate(model, data, split: str = "test") -> dict:
    """Accuracy, macro precision/recall/F1 and parameter count on a held-out split."""
    from kdq_tf.report import classification_metrics

    logits = predict_logits(model, data, split)
    _, y = data.split(split)
    m = classification_metrics(y, logits.argmax(-1), data.info.num_classes).to_dict()
    m["params"] = int(model.count_params())
    m["split"] = split
    return m


def val_accuracy(model, data) -> float | None:
    """Accuracy on the validation split, None without one (selection uses val, never test)."""
    return evaluate(model, data, "val")["accuracy"] if data.info.n_val else None


def write_report(run: RunDir) -> str:
    """Writes report.md from metrics.json and returns the table."""
    from kdq_tf.report import results_table

    table = results_table(run.metrics())
    files.write_text(run.path / "report.md", f"# kdq_tf run: {run.path}\n\n{table}\n")
    return table


def _steps_per_epoch(cfg: Config, data) -> int:
    return int(np.ceil(data.info.n_train / cfg.data.batch_size))


def _distill_phase(cfg: Config, epochs: int, lr: float, steps: int):
    from kdq_tf.losses import LossWeights
    from kdq_tf.training import Phase, cosine_adam

    d = cfg.distill
    weights = LossWeights.from_config(d.lam, d.alpha)

    def prepare(m):
        m.compile(optimizer=cosine_adam(lr, epochs, steps), temperature=d.temperature, loss_weights=weights,
                  soft_loss=d.soft_loss, hard_loss=d.hard_loss)

    return [Phase("train", epochs, prepare)]


def _distill_inputs(cfg: Config, data, guidance):
    """Train/val pipelines and steps per epoch.

    `(x, y)` for online guidance, `(x, (y, teacher_logits))` for cached; with K views the
    training pipeline is endless and each epoch of `steps` batches is one view.
    """
    seed = cfg.run.seed
    if guidance.train_logits is None:
        return (data.pipeline("train", training=True, seed=seed),
                data.pipeline("val") if data.info.n_val else None, None)
    val = data.pipeline("val", extra=guidance.val_logits) if data.info.n_val else None
    if guidance.views:
        train = data.views_training_pipeline(guidance.view_aug, guidance.view_logits, guidance.view_seed, seed=seed)
        return train, val, _steps_per_epoch(cfg, data)
    train = data.pipeline("train", training=True, extra=guidance.train_logits, augment=False, seed=seed)
    return train, val, None


def _train_student(cfg, run, data, stage, student, teacher, guidance, epochs, lr, callbacks=None) -> dict:
    """Fits a student under the Distiller; returns timings and epochs."""
    from kdq_tf.distiller import Distiller
    from kdq_tf.training import fit_phases

    distiller = Distiller(student, teacher if guidance.train_logits is None else None)
    train, val, steps = _distill_inputs(cfg, data, guidance)
    t0 = time.perf_counter()
    result = fit_phases(distiller, _distill_phase(cfg, epochs, lr, _steps_per_epoch(cfg, data)), train, val,
                        run_dir=run.path, stage=stage, resume=cfg.run.resume, steps_per_epoch=steps,
                        callbacks=callbacks)
    return {"train_time_s": round(time.perf_counter() - t0, 2), "epochs_run": result["epochs"]}


def _baseline(cfg, run, data, aug) -> dict:
    """The scratch twin: same student, seed, epochs, schedule and augmentation, hard labels only."""
    from kdq_tf.models.students import build_student

    seed_everything(cfg.run.seed)
    model = build_student(cfg.distill.student, data.info.input_shape, data.info.num_classes)
    t0 = time.perf_counter()
    _fit_hard(cfg, run, data, model, "baseline", cfg.distill.epochs, cfg.distill.lr, aug)
    files.save_keras(model, run.path / "baseline.keras")
    return {**evaluate(model, data), "val_accuracy": val_accuracy(model, data),
            "train_time_s": round(time.perf_counter() - t0, 2)}


def _baseline_qat(cfg, run, data, aug) -> dict:
    """QAT of the scratch twin with hard labels, same epochs and rate as the distilled student's QAT."""
    from kdq_tf.qat import load_qat_model, quantize_student

    model = quantize_student(load_student(run.path / "baseline.keras"), cfg.qat.skip)
    t0 = time.perf_counter()
    _fit_hard(cfg, run, data, model, "baseline_qat", cfg.qat.epochs, cfg.qat.lr, aug)
    reloaded = load_qat_model(files.save_keras(model, run.path / "baseline_qat.h5"))
    return {**evaluate(reloaded, data), "val_accuracy": val_accuracy(reloaded, data),
            "train_time_s": round(time.perf_counter() - t0, 2)}


def _fit_hard(cfg, run, data, model, stage: str, epochs: int, lr: float, aug) -> None:
    from kdq_tf._keras import keras
    from kdq_tf.training import Phase, cosine_adam, fit_phases

    def prepare(m):
        m.compile(optimizer=cosine_adam(lr, epochs, _steps_per_epoch(cfg, data)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])

    val = data.pipeline("val") if data.info.n_val else None
    fit_phases(model, [Phase("train", epochs, prepare)],
               data.pipeline("train", training=True, augment=aug, seed=cfg.run.seed), val,
               run_dir=run.path, stage=stage, resume=cfg.run.resume)


def run_distill(cfg: Config) -> tuple[RunDir, dict]:
    """`kdq_tf distill`: data -> teacher -> distilled student -> optional QAT, all in one run dir.

    Writes student.keras, student_qat.h5 (with QAT), baseline.keras (with
    --baseline), metrics.json and report.md.
    """
    from kdq_tf.data import load_dataset

    # 1. Data, and every input check, before the output folder is touched.
    data = load_dataset(cfg.data, seed=cfg.run.seed)
    with distributed(cfg) as cfg:
        return _run_distill(cfg, data)


def _run_distill(cfg: Config, data) -> tuple[RunDir, dict]:
    from kdq_tf import guidance as G
    from kdq_tf.teacher_stage import load_user_teacher, logits_teacher_metrics, teacher_stage

    info = data.info
    d = cfg.distill
    mode = G.resolve_mode(d.guidance, cfg.data.augment, d.views)
    user_teacher = load_user_teacher(cfg, data)
    logits = G.from_file(cfg.teacher.logits, data, mode, d.views) if cfg.teacher.logits else None
    seed_everything(cfg.run.seed)
    student = _checked_student(cfg, info)
    run = prepare_run_dir(cfg)

    # 2. Teacher: a model, or the accuracy of precomputed logits.
    if logits is not None:
        teacher = None
        run.update_metrics("teacher", logits_teacher_metrics(cfg, data, logits))
    else:
        teacher, _ = teacher_stage(cfg, run, data, user_teacher)

    # 3. Guidance and distillation.
    done = run.metrics()
    student_path = run.path / "student.keras"
    guidance = logits or G.build_guidance(mode, teacher, data, run.path, calib_samples=cfg.export.calib_samples,
                                          views=d.views, view_seed=cfg.run.seed)
    run.update_metrics("guidance", {"mode": mode, "views": guidance.views, "cache_bytes": guidance.cache_bytes,
                                    "max_abs_error": guidance.max_abs_error, "build_time_s": guidance.build_time_s,
                                    "reused": guidance.reused,
                                    "source": str(cfg.teacher.logits) if logits is not None else "teacher"})
    if cfg.run.resume and student_path.is_file() and "student" in done:
        student = load_student(student_path)
    else:
        timing = _train_student(cfg, run, data, "distill", student, teacher, guidance, d.epochs, d.lr)
        files.save_keras(student, student_path)
        run.update_metrics("student", {**evaluate(student, data), "val_accuracy": val_accuracy(student, data),
                                       **timing, "guidance": mode, "name": d.student})

    # 4. Baseline: hard labels only, same student, seed, epochs and augmentation: that of the
    #    K views when the student trains on views (random draws of it), else the data's.
    twin_aug = guidance.view_aug if guidance.views else (cfg.data.augment and guidance.train_logits is None)
    if cfg.distill.baseline and not (cfg.run.resume and "baseline" in run.metrics()):
        run.update_metrics("baseline", _baseline(cfg, run, data, twin_aug))

    # 5. Optional shrinkage, then QAT with the teacher still guiding.
    from kdq_tf.qat import load_qat_model, quantize_student
    from kdq_tf.structure_stage import load_structured_qat, preserve_of, shrink_stage, structure_stage

    if cfg.distill.cluster or cfg.distill.prune:
        student = structure_stage(cfg, run, data, student, teacher, guidance)
    if cfg.qat.enabled and not (cfg.run.resume and "student_qat" in run.metrics()):
        if cfg.distill.shrink:
            student = shrink_stage(cfg, run, data, student)
        qat_student = quantize_student(student, cfg.qat.skip, preserve_of(cfg))
        timing = _train_student(cfg, run, data, "qat", qat_student, teacher, guidance, cfg.qat.epochs, cfg.qat.lr)
        # H5, not .keras: TF-MOT 0.8's QuantizeLayer does not reload from the .keras format
        # ("expected 5 variables, but received 3"); H5 round-trips exactly.
        qat_path = files.save_keras(qat_student, run.path / "student_qat.h5")
        # prove the artifact loads before reporting it
        reloaded = load_structured_qat(run.path, cfg) if preserve_of(cfg) != "none" else load_qat_model(qat_path)
        run.update_metrics("student_qat", {**evaluate(reloaded, data), "val_accuracy": val_accuracy(reloaded, data),
                                           **timing, "skip": cfg.qat.skip})
    if cfg.qat.enabled and cfg.distill.baseline and not (cfg.run.resume and "baseline_qat" in run.metrics()):
        run.update_metrics("baseline_qat", _baseline_qat(cfg, run, data, twin_aug))

    write_report(run)
    return run, run.metrics()


def _checked_student(cfg: Config, info):
    """Builds the student and fails early if it cannot serve: wrong outputs, or not quantizable with --qat."""
    from kdq_tf.models.students import build_student
    from kdq_tf.qat import quantize_student

    student = build_student(cfg.distill.student, info.input_shape, info.num_classes, cfg.teacher.unsafe_load)
    if cfg.qat.enabled:
        quantize_student(student, cfg.qat.skip)  # dry run: TF-MOT errors surface before hours of training
    return student


def load_student(path: Path):
    from kdq_tf._keras import keras

    return keras.models.load_model(path, compile=False)
