"""The student's stages of a run: distillation, the scratch twin, and QAT with the teacher
still guiding. `pipeline.py` calls them in order; each records its metrics in the run folder
and is skipped on --resume once recorded.
"""

import time

from kdq_tf import files
from kdq_tf.config import Config
from kdq_tf.distill.qat import load_qat_model, quantize_student
from kdq_tf.distill.structure import load_structured_qat, preserve_of
from kdq_tf.distill.train import fit_hard, train_student
from kdq_tf.errors import ConfigError
from kdq_tf.models.students import STUDENTS, build_student
from kdq_tf.runs import RunDir, evaluate, load_student, seed_everything, val_accuracy


def checked_student(cfg: Config, info):
    """Builds the student and fails early if it cannot serve: wrong outputs, not quantizable
    with --qat, or nothing to train (--epochs 0 without a trained --student).

    Raises:
        ConfigError: --epochs 0 with a student built from the zoo.
        ModelError: the student's outputs do not fit the data, or TF-MOT refuses it.
    """
    d = cfg.distill
    if d.epochs == 0 and d.student in STUDENTS:
        raise ConfigError(
            f"--epochs 0 with --student {d.student} would export an untrained student;"
            " give a trained one (--student PATH.keras) or --epochs >= 1"
        )
    student = build_student(d.student, info.input_shape, info.num_classes, cfg.teacher.unsafe_load)
    if cfg.qat.enabled:
        quantize_student(student, cfg.qat.skip)  # dry run: TF-MOT errors surface before training
    return student


def distill_stage(cfg: Config, run: RunDir, data, student, teacher, guidance, callbacks=()):
    """Trains the student under the Distiller (or reloads it on --resume); writes student.keras
    and the metrics "student". Returns the student."""
    path = run.path / "student.keras"
    if cfg.run.resume and path.is_file() and "student" in run.metrics():
        return load_student(path)
    d = cfg.distill
    timing = train_student(
        cfg, run, data, "distill", student, teacher, guidance, d.epochs, d.lr, list(callbacks)
    )
    files.save_keras(student, path)
    run.update_metrics(
        "student",
        {
            **evaluate(student, data),
            "val_accuracy": val_accuracy(student, data),
            **timing,
            "guidance": guidance.mode,
            "name": d.student,
        },
    )
    return student


def baseline_stage(cfg: Config, run: RunDir, data, aug) -> dict:
    """The scratch twin: same student, seed, epochs, schedule and augmentation, hard labels only.

    Writes baseline.keras; returns its metrics.
    """
    seed_everything(cfg.run.seed)
    model = build_student(cfg.distill.student, data.info.input_shape, data.info.num_classes)
    t0 = time.perf_counter()
    fit_hard(cfg, run, data, model, "baseline", cfg.distill.epochs, cfg.distill.lr, aug)
    files.save_keras(model, run.path / "baseline.keras")
    return {
        **evaluate(model, data),
        "val_accuracy": val_accuracy(model, data),
        "train_time_s": round(time.perf_counter() - t0, 2),
    }


def baseline_qat_stage(cfg: Config, run: RunDir, data, aug) -> dict:
    """QAT of the scratch twin with hard labels, same epochs and rate as the student's QAT."""
    model = quantize_student(load_student(run.path / "baseline.keras"), cfg.qat.skip)
    t0 = time.perf_counter()
    fit_hard(cfg, run, data, model, "baseline_qat", cfg.qat.epochs, cfg.qat.lr, aug)
    reloaded = load_qat_model(files.save_keras(model, run.path / "baseline_qat.h5"))
    return {
        **evaluate(reloaded, data),
        "val_accuracy": val_accuracy(reloaded, data),
        "train_time_s": round(time.perf_counter() - t0, 2),
    }


def qat_stage(cfg: Config, run: RunDir, data, student, teacher, guidance) -> dict:
    """QAT of the (structured) student with the teacher still guiding; writes student_qat.h5.

    Returns the metrics "student_qat", measured on the reloaded file.
    """
    qat_student = quantize_student(student, cfg.qat.skip, preserve_of(cfg))
    timing = train_student(
        cfg, run, data, "qat", qat_student, teacher, guidance, cfg.qat.epochs, cfg.qat.lr
    )
    # H5, not .keras: TF-MOT 0.8's QuantizeLayer does not reload from the .keras format
    # ("expected 5 variables, but received 3"); H5 round-trips exactly.
    qat_path = files.save_keras(qat_student, run.path / "student_qat.h5")
    # prove the artifact loads before reporting it
    reloaded = (
        load_structured_qat(run.path, cfg)
        if preserve_of(cfg) != "none"
        else load_qat_model(qat_path)
    )
    return {
        **evaluate(reloaded, data),
        "val_accuracy": val_accuracy(reloaded, data),
        **timing,
        "skip": cfg.qat.skip,
    }
