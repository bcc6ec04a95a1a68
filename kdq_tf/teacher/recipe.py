"""The teacher's training recipe: precision, augmentation, phases, schedule and snapshots.

`models/teacher.py` only builds networks; how the teacher is trained lives here, next to
the other training code. The recipe exists because distillation pays only when the
teacher is clearly better than its student: on 28x28 images a ResNet50 needs
augmentation and many epochs to get there, and on a CPU every speed-up counts.
"""

import logging
import os
from pathlib import Path

from kdq_tf._keras import keras, tf
from kdq_tf.config import DataConfig, TeacherConfig
from kdq_tf.data.augment import Augment
from kdq_tf.models.teacher import backbone_of, build_teacher
from kdq_tf.training import Phase, cosine_adam

log = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), from /proc/cpuinfo."""
    try:
        flags = next(
            (line for line in open("/proc/cpuinfo") if line.startswith("flags")), ""
        ).split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """ "auto" -> mixed_bfloat16 on CPUs with bf16 arithmetic, else float32."""
    if precision == "auto":
        return "mixed_bfloat16" if cpu_has_bf16() else "float32"
    return precision


def build_teacher_for_training(
    input_shape, num_classes: int, cfg: TeacherConfig, preprocess=None, raw_max: float = 255.0
):
    """Builds the ResNet50 teacher under the recipe's precision.

    The Keras dtype policy is global, so it is set only while the teacher's layers are
    built: the student built later stays float32, as QAT and the int8 converter need.
    The logits layer always computes in float32 (the mixed-precision guide's rule for
    numerically sensitive outputs).

    Returns:
        `(model, precision)`, precision being what actually ran.
    """
    precision = resolve_precision(cfg.precision)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = build_teacher(
            input_shape, num_classes, cfg, preprocess, raw_max, logits_dtype="float32"
        )
    finally:
        keras.mixed_precision.set_global_policy(previous)
    log.info("teacher precision: %s%s", precision, " (CPU has bf16)" if cpu_has_bf16() else "")
    return model, precision


def teacher_augment(cfg: TeacherConfig, data: DataConfig) -> Augment | None:
    """The teacher stage's augmentation: the data's crop and flip plus random erasing."""
    if not cfg.augment:
        return None
    return Augment(flip=data.flip, translate=data.translate, erase=cfg.erase)


def teacher_phases(model, cfg: TeacherConfig, steps_per_epoch: int):
    """Training phases: ImageNet -> head then whole net at a lower rate; scratch -> one phase."""
    k = model.output_shape[-1]

    def loss(y, logits):  # sparse labels, optional label smoothing
        onehot = tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), k)
        return keras.losses.categorical_crossentropy(
            onehot, logits, from_logits=True, label_smoothing=cfg.label_smoothing
        )

    def compile_with(lr: float, epochs: int):
        model.compile(
            optimizer=cosine_adam(lr, epochs, steps_per_epoch, cfg.weight_decay),
            loss=loss,
            jit_compile=cfg.jit,
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    backbone = backbone_of(model)

    def head(m):
        if backbone is not None:
            backbone.trainable = False
        compile_with(cfg.lr, cfg.head_epochs)

    def whole(m, lr):
        if backbone is not None:
            backbone.trainable = True
        compile_with(lr, cfg.epochs)

    if cfg.weights == "imagenet" and backbone is not None:
        return [
            Phase("head", cfg.head_epochs, head),
            Phase("finetune", cfg.epochs, lambda m: whole(m, cfg.lr * cfg.finetune_lr_factor)),
        ]
    return [Phase("train", cfg.epochs, lambda m: whole(m, cfg.lr))]


class Snapshots(keras.callbacks.Callback):
    """Keeps the weights every `every` epochs as `<folder>/epoch_NNN.weights.h5`.

    Snapshots of one run are teachers of known, rising accuracy: members for fusion,
    and the points of the KD-gain-vs-teacher-accuracy study. Each file is written
    to a temporary name and renamed, so a crash never leaves half a snapshot.
    """

    def __init__(self, folder: Path, every: int, phase: str = "train"):
        super().__init__()
        self.folder, self.every, self.phase = Path(folder), every, phase

    def on_epoch_end(self, epoch, logs=None):
        if self.every and (epoch + 1) % self.every == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{self.phase}_epoch_{epoch + 1:03d}.weights.h5"
            tmp = path.with_name(f".tmp_{path.name}")
            self.model.save_weights(str(tmp))
            os.replace(tmp, path)
            log.info("teacher snapshot %s", path)
