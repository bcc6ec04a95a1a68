"""The structure stage of a run: the distilled student fine-tuned clustered and/or pruned, with
the teacher still guiding it, before QAT (which then keeps the structure;
kdq_tf.distill.cluster_prune).

`pipeline.py` calls it between distillation and QAT.
"""

import logging

from kdq_tf import files
from kdq_tf.config import Config
from kdq_tf.distill import cluster_prune as CP
from kdq_tf.distill.qat import quantize_student, shrink_kernels
from kdq_tf.distill.train import train_student
from kdq_tf.runs import evaluate, load_student, steps_per_epoch, val_accuracy

log = logging.getLogger(__name__)

STRUCTURED = "student_structured.keras"


def preserve_of(cfg: Config) -> str:
    """The QAT scheme that keeps this run's structure ("none" without --cluster/--prune/--shrink).

    The soft threshold (--shrink) makes zeros as pruning does; plain QAT would train them away.
    """
    d = cfg.distill
    sparse = bool(d.prune or d.shrink)
    if d.cluster and sparse:
        return "prune+cluster"
    return "cluster" if d.cluster else "prune" if sparse else "none"


def structure_stage(cfg: Config, run, data, student, teacher, guidance):
    """Prunes (first: the zeros then cluster too) and/or clusters the student and fine-tunes it
    under the Distiller for `distill.structure_epochs`; returns the stripped student.

    Writes `student_structured.keras` and the metrics "student_structured" (accuracy, and the
    distinct values and zeros of every kernel).
    """
    d = cfg.distill
    path = run.path / STRUCTURED
    if cfg.run.resume and path.is_file() and "student_structured" in run.metrics():
        return load_student(path)
    epochs = d.structure_epochs
    timing = {}
    if d.prune:
        steps = epochs * steps_per_epoch(cfg, data)
        # Reach the final sparsity after two thirds of the steps; the rest recovers accuracy.
        wrapped = CP.prune(student, d.prune, end_step=max(2, 2 * steps // 3))
        timing["prune"] = train_student(
            cfg,
            run,
            data,
            "prune",
            wrapped,
            teacher,
            guidance,
            epochs,
            d.lr / 10,
            callbacks=CP.pruning_callbacks(),
        )
        student = CP.strip(wrapped)
    if d.cluster:
        wrapped = CP.cluster(student, d.cluster, preserve_sparsity=bool(d.prune))
        timing["cluster"] = train_student(
            cfg, run, data, "cluster", wrapped, teacher, guidance, epochs, d.lr / 10
        )
        student = CP.strip(wrapped)
    files.save_keras(student, path)
    kernels = CP.kernel_stats(student)
    run.update_metrics(
        "student_structured",
        {
            **evaluate(student, data),
            "val_accuracy": val_accuracy(student, data),
            "cluster": d.cluster,
            "prune": d.prune,
            "kernels": kernels,
            "timing": timing,
            "max_unique": max(k["unique"] for k in kernels),
            "min_zeros": min(k["zeros"] for k in kernels),
        },
    )
    log.info(
        "structured student: %s",
        ", ".join(
            f"{k['layer']} {k['unique']} values, {100 * k['zeros']:.0f}% zeros" for k in kernels
        ),
    )
    return student


def shrink_stage(cfg: Config, run, data, student):
    """Applies --shrink's soft threshold to every kernel (no training: QAT follows and keeps the
    zeros); writes `student_structured.keras` and the metrics "shrink"."""
    path = run.path / STRUCTURED
    if cfg.run.resume and path.is_file() and "shrink" in run.metrics():
        return load_student(path)
    before = evaluate(student, data)["accuracy"]
    stats = shrink_kernels(student, cfg.distill.shrink)
    files.save_keras(student, path)
    run.update_metrics(
        "shrink",
        {
            **stats,
            "accuracy_before": before,
            "accuracy_after": evaluate(student, data)["accuracy"],
            "kernels": CP.kernel_stats(student),
        },
    )
    log.info(
        "shrink %.4g: %.1f%% of the kernel weights are zero",
        stats["delta"],
        100 * stats["sparsity_after"],
    )
    return student


def load_structured_qat(run_dir, cfg: Config):
    """A run's structure-preserving QAT student (student_qat.h5).

    Keras cannot rebuild TF-MOT's cluster/prune-preserving quantize wrappers from the saved
    config (it builds default ones, with fewer weights), so the model is rebuilt the way the
    run built it, from `student_structured.keras`, and the trained weights are loaded into it.
    """
    model = quantize_student(load_student(run_dir / STRUCTURED), cfg.qat.skip, preserve_of(cfg))
    model.load_weights(str(run_dir / "student_qat.h5"))
    return model
