"""The one place that knows the stage order: `kdq_tf teacher` and `kdq_tf distill`.

Each stage lives with its side (kdq_tf.teacher.stage, kdq_tf.distill.stages,
kdq_tf.distill.structure) and writes into the run folder (kdq_tf.runs.RunDir).
"""

from pathlib import Path

from kdq_tf.config import Config
from kdq_tf.data.dataset import load_dataset
from kdq_tf.distill import guidance as G
from kdq_tf.distill import stages
from kdq_tf.distill.structure import shrink_stage, structure_stage
from kdq_tf.runs import RunDir, distributed, prepare_run_dir, seed_everything, write_report
from kdq_tf.teacher.stage import (
    check_logits_path,
    load_user_teacher,
    logits_teacher_metrics,
    teacher_stage,
    write_logits_file,
)


def run_teacher(cfg: Config, save_logits: str | None = None) -> tuple[RunDir, dict]:
    """`kdq_tf teacher`: data -> teacher -> metrics.json + report.md (+ a logits file).

    Args:
        save_logits: also write the teacher's logits here (kdq_tf.teacher.logits_file format,
            int8): every training row, the test split and `distill.views` augmented views.
    """
    data = load_dataset(
        cfg.data, seed=cfg.run.seed
    )  # validate inputs before touching the output folder
    if save_logits:
        check_logits_path(Path(save_logits))
    with distributed(cfg) as cfg:
        user_teacher = load_user_teacher(cfg, data)
        run = prepare_run_dir(cfg)
        seed_everything(cfg.run.seed)
        teacher, metrics = teacher_stage(cfg, run, data, user_teacher)
        if save_logits:
            write_logits_file(cfg, data, teacher, metrics, Path(save_logits))
        write_report(run)
        return run, run.metrics()


def run_distill(cfg: Config, data=None, callbacks=()) -> tuple[RunDir, dict]:
    """`kdq_tf distill`: data -> teacher -> distilled student -> optional QAT, all in one run dir.

    Writes student.keras, student_qat.h5 (with QAT), baseline.keras (with
    --baseline), metrics.json and report.md.

    Args:
        data: the loaded data set; None: load `cfg.data`. The search passes one whose test split
            is the validation split, so no trial ever scores the test split.
        callbacks: Keras callbacks for the distillation epochs (the search's pruner).
    """
    # 1. Data, and every input check, before the output folder is touched.
    if data is None:
        data = load_dataset(cfg.data, seed=cfg.run.seed)
    with distributed(cfg) as cfg:
        return _run_distill(cfg, data, list(callbacks))


def _run_distill(cfg: Config, data, callbacks: list) -> tuple[RunDir, dict]:
    d = cfg.distill
    mode = G.resolve_mode(d.guidance, cfg.data.augment, d.views)
    user_teacher = load_user_teacher(cfg, data)
    logits = G.from_file(cfg.teacher.logits, data, mode, d.views) if cfg.teacher.logits else None
    seed_everything(cfg.run.seed)
    student = stages.checked_student(cfg, data.info)
    run = prepare_run_dir(cfg)

    # 2. Teacher: a model, or the accuracy of precomputed logits.
    if logits is not None:
        teacher = None
        run.update_metrics("teacher", logits_teacher_metrics(cfg, data, logits))
    else:
        teacher, _ = teacher_stage(cfg, run, data, user_teacher)

    # 3. Guidance and distillation.
    guidance = logits or G.build_guidance(
        mode,
        teacher,
        data,
        run.path,
        calib_samples=cfg.export.calib_samples,
        views=d.views,
        view_seed=cfg.run.seed,
    )
    run.update_metrics(
        "guidance",
        {
            "mode": mode,
            "views": guidance.views,
            "cache_bytes": guidance.cache_bytes,
            "max_abs_error": guidance.max_abs_error,
            "build_time_s": guidance.build_time_s,
            "reused": guidance.reused,
            "source": str(cfg.teacher.logits) if logits is not None else "teacher",
        },
    )
    student = stages.distill_stage(cfg, run, data, student, teacher, guidance, callbacks)

    # 4. Baseline: hard labels only, same student, seed, epochs and augmentation.
    twin_aug = _twin_augment(cfg, guidance)
    if d.baseline and not _done(cfg, run, "baseline"):
        run.update_metrics("baseline", stages.baseline_stage(cfg, run, data, twin_aug))

    # 5. Optional structure (clusters, zeros) and shrinkage, then QAT with the teacher guiding.
    if d.cluster or d.prune:
        student = structure_stage(cfg, run, data, student, teacher, guidance)
    if cfg.qat.enabled and not _done(cfg, run, "student_qat"):
        if d.shrink:
            student = shrink_stage(cfg, run, data, student)
        run.update_metrics(
            "student_qat", stages.qat_stage(cfg, run, data, student, teacher, guidance)
        )
    if cfg.qat.enabled and d.baseline and not _done(cfg, run, "baseline_qat"):
        run.update_metrics("baseline_qat", stages.baseline_qat_stage(cfg, run, data, twin_aug))

    write_report(run)
    return run, run.metrics()


def run_twin(cfg: Config, data=None) -> tuple[RunDir, dict]:
    """The scratch twin of `kdq_tf distill --baseline` alone, in its own run dir.

    Same student, seed, epochs, schedule, augmentation and QAT as that run's twin, without the
    distillation: a study can then train a student and its twin side by side, in two processes,
    and each finishes in half the time of the pair. Writes baseline.keras, baseline_qat.h5
    (with QAT), metrics.json and report.md.
    """
    if data is None:
        data = load_dataset(cfg.data, seed=cfg.run.seed)
    with distributed(cfg) as cfg:
        d = cfg.distill
        mode = G.resolve_mode(d.guidance, cfg.data.augment, d.views)
        if cfg.teacher.logits:  # read for the views' augmentation; no logit reaches the twin
            aug = _twin_augment(cfg, G.from_file(cfg.teacher.logits, data, mode, d.views))
        else:  # build_guidance makes views with the data's augmentation
            aug = data.augmentation() if d.views else cfg.data.augment and mode == "online"
        stages.checked_student(cfg, data.info)
        run = prepare_run_dir(cfg)
        if not _done(cfg, run, "baseline"):
            run.update_metrics("baseline", stages.baseline_stage(cfg, run, data, aug))
        if cfg.qat.enabled and not _done(cfg, run, "baseline_qat"):
            run.update_metrics("baseline_qat", stages.baseline_qat_stage(cfg, run, data, aug))
        write_report(run)
        return run, run.metrics()


def _twin_augment(cfg: Config, guidance):
    """The twin's augmentation: that of the K views when the student trains on views (random
    draws of it), the data's when the student sees augmented images online, else none."""
    if guidance.views:
        return guidance.view_aug
    return cfg.data.augment and guidance.train_logits is None


def _done(cfg: Config, run: RunDir, stage: str) -> bool:
    """A stage that --resume finds recorded is not run again."""
    return cfg.run.resume and stage in run.metrics()
