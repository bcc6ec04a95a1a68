"""Pure distillation losses. All return per-example values, shape (batch,).

The caller averages over the global batch (`tf.nn.compute_average_loss`), which
keeps the losses correct under `tf.distribute` strategies.
"""

from dataclasses import dataclass

import numpy as np

from kdq_tf._keras import tf


@dataclass(frozen=True)
class LossWeights:
    """L = soft * L_soft + hard * L_hard."""

    soft: float = 1.0
    hard: float = 0.5

    @classmethod
    def from_config(cls, lam: float | None = None, alpha: float | None = None) -> "LossWeights":
        """Maps either parametrisation to weights.

        Args:
            lam: `L = L_soft + lam * L_hard` (this toolkit's form). Defaults to 0.5, the
                benchmark's validation-sweep winner (benchmarks/results/full.md).
            alpha: `L = alpha * L_hard + (1 - alpha) * L_soft` (keras-io's form).

        Raises:
            ValueError: both given, alpha outside [0, 1], or lam < 0.
        """
        if lam is not None and alpha is not None:
            raise ValueError(f"give either lambda ({lam}) or alpha ({alpha}), not both")
        if alpha is not None:
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"alpha must be in [0, 1], got {alpha}")
            return cls(soft=1.0 - alpha, hard=alpha)
        lam = 0.5 if lam is None else lam
        if lam < 0:
            raise ValueError(f"lambda must be >= 0, got {lam}")
        return cls(soft=1.0, hard=lam)


def soft_loss(teacher_logits, student_logits, temperature: float, kind: str = "kl"):
    """T^2-scaled divergence between the temperature-softened distributions.

    Soft-target gradients scale as 1/T^2 (Hinton et al. 2015), so the loss is
    multiplied by T^2 to keep its weight independent of T.

    Args:
        teacher_logits: (batch, classes).
        student_logits: (batch, classes).
        temperature: T > 0.
        kind: "kl" for KL(p_teacher || p_student), "ce" for cross-entropy
            (KL plus the teacher's entropy: same gradients, different value).

    Returns:
        (batch,) losses.
    """
    t = tf.cast(teacher_logits, tf.float32) / temperature
    s = tf.cast(student_logits, tf.float32) / temperature
    p_t = tf.nn.softmax(t)  # (batch, classes)
    log_p_s = tf.nn.log_softmax(s)
    ce = -tf.reduce_sum(p_t * log_p_s, axis=-1)
    if kind == "kl":
        loss = ce + tf.reduce_sum(
            p_t * tf.nn.log_softmax(t), axis=-1
        )  # minus the teacher's entropy
    elif kind == "ce":
        loss = ce
    else:
        raise ValueError(f"soft loss must be 'kl' or 'ce', got {kind!r}")
    return loss * (temperature**2)


def hard_loss(labels, student_logits, kind: str = "ce"):
    """Student vs true labels: cross-entropy, or MSE between softmax and one-hot.

    Args:
        labels: (batch,) integer class ids.
        student_logits: (batch, classes).
        kind: "ce" or "mse".

    Returns:
        (batch,) losses.
    """
    logits = tf.cast(student_logits, tf.float32)
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    if kind == "ce":
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    if kind == "mse":
        onehot = tf.one_hot(labels, tf.shape(logits)[-1])
        return tf.reduce_mean(tf.square(tf.nn.softmax(logits) - onehot), axis=-1)
    raise ValueError(f"hard loss must be 'ce' or 'mse', got {kind!r}")


def distillation_loss(
    labels,
    teacher_logits,
    student_logits,
    temperature: float,
    weights: LossWeights = LossWeights(),
    soft_kind: str = "kl",
    hard_kind: str = "ce",
):
    """Returns per-example `(total, soft, hard)` with `total = w.soft*soft + w.hard*hard`."""
    soft = soft_loss(teacher_logits, student_logits, temperature, soft_kind)
    hard = hard_loss(labels, student_logits, hard_kind)
    return weights.soft * soft + weights.hard * hard, soft, hard


def soft_threshold(w: np.ndarray, delta: float) -> np.ndarray:
    """Q(w) = sign(w) * max(0, |w| - delta): shrinks every weight by delta, zeroing small ones.

    This is shrinkage (it creates sparsity), not a quantizer.
    """
    if delta < 0:
        raise ValueError(f"delta must be >= 0, got {delta}")
    w = np.asarray(w)
    return (np.sign(w) * np.maximum(0.0, np.abs(w) - delta)).astype(w.dtype)
