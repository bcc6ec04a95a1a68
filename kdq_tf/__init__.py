"""kdq_tf: knowledge distillation + quantization-aware training -> int8 TFLite for microcontrollers.

The public API, grouped by stage. Names resolve lazily so that `import kdq_tf`
stays free of TensorFlow on devices that only have the runtime extra.
"""

import importlib

__version__ = "0.1.0"

_API = {
    # Configuration: frozen dataclasses, TOML/--set loading.
    "Config": "kdq_tf.config",
    "DataConfig": "kdq_tf.config",
    "TeacherConfig": "kdq_tf.config",
    "DistillConfig": "kdq_tf.config",
    "QATConfig": "kdq_tf.config",
    "ExportConfig": "kdq_tf.config",
    "RunConfig": "kdq_tf.config",
    "load_config": "kdq_tf.config",
    # Errors shown to users as one line (exit code 2 in the CLI).
    "KdqError": "kdq_tf.errors",
    "DataError": "kdq_tf.errors",
    "ConfigError": "kdq_tf.errors",
    "ModelError": "kdq_tf.errors",
    # Data: named sets, npz:, dir: -> tf.data pipelines.
    "load_dataset": "kdq_tf.data.dataset",
    "Dataset": "kdq_tf.data.dataset",
    "DatasetInfo": "kdq_tf.data.dataset",
    "read_idx": "kdq_tf.data.readers",
    "Augment": "kdq_tf.data.augment",
    # Models: teacher and students.
    "build_teacher": "kdq_tf.models.teacher",
    "load_teacher": "kdq_tf.models.teacher",
    "build_student": "kdq_tf.models.students",
    "STUDENTS": "kdq_tf.models.students",
    # Teachers: the training recipe, fusion of several teachers, logits files made anywhere.
    "build_teacher_for_training": "kdq_tf.teacher.recipe",
    "fused_model": "kdq_tf.teacher.fusion",
    "load_member": "kdq_tf.teacher.fusion",
    "TeacherLogits": "kdq_tf.teacher.logits_file",
    # Distillation: losses, the Distiller, teacher guidance, QAT.
    "soft_loss": "kdq_tf.distill.losses",
    "hard_loss": "kdq_tf.distill.losses",
    "distillation_loss": "kdq_tf.distill.losses",
    "LossWeights": "kdq_tf.distill.losses",
    "soft_threshold": "kdq_tf.distill.losses",
    "Distiller": "kdq_tf.distill.distiller",
    "build_guidance": "kdq_tf.distill.guidance",
    "quantize_student": "kdq_tf.distill.qat",
    "load_qat_model": "kdq_tf.distill.qat",
    # Below int8: clustering and pruning that QAT keeps, TFLite-Micro LUT compression.
    "cluster_weights": "kdq_tf.distill.cluster_prune:cluster",
    "prune_weights": "kdq_tf.distill.cluster_prune:prune",
    "strip_structure": "kdq_tf.distill.cluster_prune:strip",
    "weight_tensors": "kdq_tf.deploy.compression",
    "compress_lut": "kdq_tf.deploy.compression",
    # Conversion to TFLite bytes, C sources, firmware, export stage.
    "to_tflite": "kdq_tf.deploy.convert",
    "model_data": "kdq_tf.device.carray",
    "model_settings": "kdq_tf.device.carray",
    "model_ops": "kdq_tf.device.carray",
    "run_export": "kdq_tf.deploy.export",
    "firmware_project": "kdq_tf.deploy.export",
    "strip_for_device": "kdq_tf.deploy.flatbuf",
    # Firmware on TFLite-Micro: build for the host or a Cortex-M4, run and check it ("module:name").
    "BuildOptions": "kdq_tf.device.build",
    "build_firmware": "kdq_tf.device.build:build",
    "run_firmware": "kdq_tf.device.run:run",
    "profile_firmware": "kdq_tf.device.profile:profile",
    # Runtimes: LiteRT (TensorFlow-free) and the TFLite-Micro host interpreter.
    "Runner": "kdq_tf.runtime.runner",
    "MicroRunner": "kdq_tf.device.micro",
    "find_arena_size": "kdq_tf.device.micro",
    # Distribution.
    "make_strategy": "kdq_tf.distribute",
    # Metrics and reports.
    "classification_metrics": "kdq_tf.report",
    # Stages and whole runs.
    "run_teacher": "kdq_tf.pipeline",
    "run_distill": "kdq_tf.pipeline",
    # Search: the most accurate student whose measured image fits a device budget.
    "Budget": "kdq_tf.search.budget",
    "SearchSpace": "kdq_tf.search.space",
    "SearchSettings": "kdq_tf.search.engine",
    "run_search": "kdq_tf.search.engine",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        module, _, attr = _API[name].partition(":")
        return getattr(importlib.import_module(module), attr or name)
    raise AttributeError(f"module 'kdq_tf' has no attribute {name!r}")
