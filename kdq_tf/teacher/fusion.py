"""Several teachers fused into one: members from .keras files, run folders or snapshots.

The fused teacher is an ordinary Keras model (members side by side, then `FuseLogits`),
so every guidance mode, cache and evaluation works on it unchanged, and its
fingerprint covers every member's weights and the fusion weights.

Fusion modes:
    logits  weighted mean of the members' logits (default). A product of experts: it stays
            a set of logits, so temperature softening, the int8 cache and a later T sweep
            apply to it exactly as to one teacher.
    probs   log of the weighted mean of the members' probabilities (at T=1): the classic
            ensemble average, for members whose logit scales differ a lot.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdq_tf import files
from kdq_tf._keras import keras, tf
from kdq_tf.config import config_from_dict
from kdq_tf.data.dataset import load_dataset
from kdq_tf.errors import ModelError
from kdq_tf.models.teacher import check_io, load_teacher
from kdq_tf.teacher.recipe import build_teacher_for_training

log = logging.getLogger(__name__)

FUSIONS = ("logits", "probs")


def fuse_numpy(logits: list[np.ndarray], weights, mode: str = "logits") -> np.ndarray:
    """The fused logits of members' logits (each (N, C)), computed in numpy (float64)."""
    w = np.asarray(weights, np.float64)
    stack = np.stack([np.asarray(z, np.float64) for z in logits])  # (M, N, C)
    if mode == "logits":
        return np.tensordot(w, stack, axes=1)
    p = np.exp(stack - stack.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.log(np.maximum(np.tensordot(w, p, axes=1), 1e-30))


class FuseLogits(keras.layers.Layer):
    """Fuses a list of (batch, C) member logits with fixed weights; see the module doc for the
    modes."""

    def __init__(self, member_weights, mode: str = "logits", **kwargs):
        super().__init__(dtype="float32", **kwargs)
        if mode not in FUSIONS:
            raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {mode!r}")
        self.member_weights = [float(v) for v in member_weights]
        self.mode = mode
        # A weight, not a constant: the teacher fingerprint then changes with the fusion weights.
        self.w = self.add_weight(
            "member_weights",
            shape=(len(self.member_weights),),
            trainable=False,
            initializer=keras.initializers.Constant(self.member_weights),
        )

    def call(self, inputs):
        z = tf.stack([tf.cast(t, tf.float32) for t in inputs])  # (M, batch, C)
        w = self.w[:, None, None]
        if self.mode == "logits":
            return tf.reduce_sum(w * z, axis=0)
        return tf.math.log(tf.maximum(tf.reduce_sum(w * tf.nn.softmax(z), axis=0), 1e-30))

    def get_config(self):
        return {**super().get_config(), "member_weights": self.member_weights, "mode": self.mode}


class FlipWidth(keras.layers.Layer):
    """Mirrors images left-right: the second view of flip test-time augmentation."""

    def call(self, inputs):
        return tf.reverse(inputs, axis=[2])  # (batch, H, W, C): W is axis 2


@dataclass(frozen=True)
class Member:
    source: str
    model: keras.Model


def parse_weights(text: str | None, n: int) -> list[float] | None:
    """ "0.6,0.4" -> [0.6, 0.4] normalised to sum 1; None passes through.

    Raises:
        ModelError: not n non-negative numbers with a positive sum.
    """
    if text is None:
        return None
    try:
        w = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ModelError(f"teacher weights must be comma-separated numbers, got {text!r}") from None
    if len(w) != n or any(v < 0 or not np.isfinite(v) for v in w) or sum(w) <= 0:
        raise ModelError(
            f"teacher weights {text!r}: need {n} non-negative numbers (one per --teacher) "
            "with a positive sum"
        )
    return [v / sum(w) for v in w]


def weights_from_accuracy(accuracies: list[float]) -> list[float]:
    """Member weights proportional to validation accuracy: better members count more, none is
    dropped."""
    a = np.maximum(np.asarray(accuracies, np.float64), 1e-6)
    return [float(v) for v in a / a.sum()]


def fused_model(
    members: list[Member], weights: list[float], mode: str = "logits", flip: bool = False
) -> keras.Model:
    """One Keras model: image -> every member -> `FuseLogits` -> (batch, C) logits.

    `flip`: every member also sees the mirrored image, and each member's weight is split
    evenly between the two views (flip test-time augmentation). Only for data whose
    classes do not change under a left-right flip, i.e. data the teachers trained with flips.
    """
    inputs = keras.Input(members[0].model.input_shape[1:], name="image")
    views = [inputs, FlipWidth(name="flip")(inputs)] if flip else [inputs]
    outs, view_weights = [], []
    for i, m in enumerate(members):
        m.model._name = f"member_{i}"  # noqa: SLF001 - nested models need unique names
        m.model.trainable = False
        for v in views:
            outs.append(m.model(v, training=False))
            view_weights.append(weights[i] / len(views))
    return keras.Model(
        inputs, FuseLogits(view_weights, mode, name="fuse")(outs), name="fused_teacher"
    )


def member_paths(spec: str) -> list[str]:
    """Splits `teacher.path`
    ("a.keras,runs/t,runs/t/teacher_snapshots/train_epoch_006.weights.h5")."""
    return [s.strip() for s in str(spec).split(",") if s.strip()]


def load_member(spec: str, input_shape, num_classes: int, unsafe: bool = False) -> Member:
    """A member from a `.keras` file, a run folder (its teacher.keras) or a snapshot of a teacher
    run.

    A snapshot (`RUN/teacher_snapshots/*.weights.h5`) is loaded into the ResNet50 that the
    run's `config.json` describes, so snapshots serve while their run is still training.

    Raises:
        ModelError: missing file, unreadable model, or shapes that do not fit the data.
    """
    p = Path(spec)
    if p.is_dir():
        if not (p / "teacher.keras").is_file():
            raise ModelError(
                f"teacher folder {p} holds no teacher.keras; give a finished run or a .keras file"
            )
        p = p / "teacher.keras"
    if p.name.endswith(".weights.h5"):
        model = _snapshot(p, input_shape, num_classes)
        check_io(model, input_shape, num_classes, what=f"teacher snapshot {p}")
        return Member(str(p), model)
    return Member(str(p), load_teacher(p, input_shape, num_classes, unsafe))


def _snapshot(path: Path, input_shape, num_classes: int) -> keras.Model:
    if not path.is_file():
        raise ModelError(f"teacher snapshot {path} does not exist")
    run = path.parent.parent
    saved = files.read_json(run / "config.json")
    if not saved:
        raise ModelError(f"snapshot {path} is not inside a teacher run (no {run / 'config.json'})")
    cfg = config_from_dict(saved)
    # The adapter folds the run's normalisation into the network: rebuild it from the run's data.
    data = load_dataset(cfg.data, seed=cfg.run.seed)
    raw_max = 255.0 if data.x_train.dtype == np.uint8 else 1.0
    model, _ = build_teacher_for_training(
        input_shape, num_classes, cfg.teacher, data.info.preprocess, raw_max
    )
    try:
        model.load_weights(str(path))
    except Exception as e:  # h5py and Keras raise many types for a wrong or truncated file
        raise ModelError(
            f"cannot load snapshot {path} into the run's ResNet50 ({type(e).__name__})"
        ) from None
    return model


def warm_start(model, spec: str, input_shape, num_classes: int) -> None:
    """Loads the weights `spec` names into the freshly built teacher (`teacher.init`).

    A finished teacher continued with a new cosine cycle (a warm restart, Loshchilov &
    Hutter 2017) keeps what it learnt and lets a long recipe span several sessions; unlike
    `--resume` it may change the schedule, the epochs and the augmentation.

    Raises:
        ModelError: the file is missing or its weights do not fit this ResNet50.
    """
    source = load_member(spec, input_shape, num_classes).model
    theirs, ours = source.get_weights(), model.get_weights()
    if [w.shape for w in theirs] != [w.shape for w in ours]:
        raise ModelError(
            f"teacher.init {spec}: its weights do not fit the teacher being trained "
            f"({len(theirs)} tensors against {len(ours)}); give a teacher built with the same "
            "input size, adapter and classes"
        )
    model.set_weights(theirs)
    log.info("teacher warm-started from %s", spec)
