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


SOFT_LOSSES = ("kl", "ce", "dist", "dkd")
# The papers' defaults: DIST (Huang et al. 2022) beta = gamma = 1; DKD (Zhao et al. 2022)
# alpha = 1, beta = 8 (their CIFAR-100 setting).
SOFT_PARAMS = {"dist": {"beta": 1.0, "gamma": 1.0}, "dkd": {"alpha": 1.0, "beta": 8.0}}


def soft_loss(
    teacher_logits,
    student_logits,
    temperature: float,
    kind: str = "kl",
    labels=None,
    params: dict | None = None,
):
    """T^2-scaled divergence between the temperature-softened distributions.

    Soft-target gradients scale as 1/T^2 (Hinton et al. 2015), so the loss is
    multiplied by T^2 to keep its weight independent of T.

    Args:
        teacher_logits: (batch, classes).
        student_logits: (batch, classes).
        temperature: T > 0.
        kind: "kl" for KL(p_teacher || p_student), "ce" for cross-entropy
            (KL plus the teacher's entropy: same gradients, different value), "dist"
            (`dist_loss`) or "dkd" (`dkd_loss`, which needs `labels`).
        labels: (batch,) class ids; DKD splits the target class from the others.
        params: DIST's beta and gamma, DKD's alpha and beta (SOFT_PARAMS are the defaults).

    Returns:
        (batch,) losses.
    """
    if kind in SOFT_PARAMS:
        p = {**SOFT_PARAMS[kind], **(params or {})}
        if kind == "dist":
            return dist_loss(teacher_logits, student_logits, temperature, **p)
        if labels is None:
            raise ValueError("the DKD loss needs the labels (the target class)")
        return dkd_loss(labels, teacher_logits, student_logits, temperature, **p)
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
        raise ValueError(f"soft loss must be one of {', '.join(SOFT_LOSSES)}, got {kind!r}")
    return loss * (temperature**2)


def _correlation(cov, var_a, var_b, eps: float = 1e-8):
    """cov / sqrt(var_a * var_b), with eps inside the root: a constant row or a batch of one
    has zero variance, where sqrt's gradient would be infinite and turn every weight into NaN."""
    return cov / tf.sqrt(var_a * var_b + eps * eps)


def _pearson(a, b):
    """Pearson correlation of the rows of a and b (batch, n) -> (batch,)."""
    a = a - tf.reduce_mean(a, axis=-1, keepdims=True)
    b = b - tf.reduce_mean(b, axis=-1, keepdims=True)
    return _correlation(
        tf.reduce_sum(a * b, -1), tf.reduce_sum(a * a, -1), tf.reduce_sum(b * b, -1)
    )


def _class_correlation(p_s, p_t):
    """Pearson correlation, per class, of the student's and the teacher's probabilities over the
    GLOBAL batch: under tf.distribute the replicas add their sums (means first, then centred
    products, which keeps float32 from cancelling), so each replica's loss is the one of the
    whole batch, as for the per-example losses."""
    ctx = tf.distribute.get_replica_context()
    many = ctx is not None and ctx.num_replicas_in_sync > 1

    def total(x):  # (k, classes) sums over this replica's examples -> over the global batch
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x) if many else x

    n = tf.cast(tf.shape(p_s)[0], tf.float32)
    first = total(
        tf.stack([tf.reduce_sum(p_s, 0), tf.reduce_sum(p_t, 0), tf.fill(tf.shape(p_s)[1:], n)])
    )
    mean_s, mean_t = first[0] / first[2], first[1] / first[2]
    ds, dt = p_s - mean_s, p_t - mean_t
    cov, var_s, var_t = tf.unstack(
        total(
            tf.stack(
                [tf.reduce_sum(ds * dt, 0), tf.reduce_sum(ds * ds, 0), tf.reduce_sum(dt * dt, 0)]
            )
        )
    )
    return _correlation(cov, var_s, var_t)  # (classes,)


def dist_loss(teacher_logits, student_logits, temperature: float, beta=1.0, gamma=1.0):
    """DIST (Huang et al. 2022, "Knowledge distillation from a stronger teacher"): match the
    relations, not the probabilities. With p = softmax(z / T) for both models:

        L = beta * T^2 * (1 - rho(p_s[i, :], p_t[i, :]))          inter-class, per example
          + gamma * T^2 * mean_c (1 - rho(p_s[:, c], p_t[:, c]))   intra-class, over the batch

    rho is Pearson's correlation. The intra-class term is one value for the batch; each example
    carries it, so averaging the (batch,) losses gives the paper's loss.
    """
    p_s = tf.nn.softmax(tf.cast(student_logits, tf.float32) / temperature)
    p_t = tf.nn.softmax(tf.cast(teacher_logits, tf.float32) / temperature)
    inter = 1.0 - _pearson(p_s, p_t)  # (batch,)
    intra = tf.reduce_mean(1.0 - _class_correlation(p_s, p_t))  # ()
    return (beta * inter + gamma * intra) * temperature**2


def dkd_loss(labels, teacher_logits, student_logits, temperature: float, alpha=1.0, beta=8.0):
    """DKD (Zhao et al. 2022, "Decoupled knowledge distillation"): KL split into the target
    class against the rest (TCKD, a binary KL) and the distribution over the other classes
    (NCKD), weighted separately. Plain KD is TCKD + (1 - p_t[target]) * NCKD, which ties NCKD's
    weight to the teacher's confidence; DKD frees it:

        L = T^2 * (alpha * KL(b_t || b_s) + beta * KL(q_t || q_s))

    b = [p_target, 1 - p_target] of softmax(z / T); q = softmax over the non-target z / T.
    """
    t = tf.cast(teacher_logits, tf.float32) / temperature
    s = tf.cast(student_logits, tf.float32) / temperature
    target = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), tf.shape(s)[-1])
    p_t, p_s = tf.nn.softmax(t), tf.nn.softmax(s)
    eps = 1e-12  # probabilities underflow to 0 for confident models; log(0) would be -inf
    bt = tf.reduce_sum(p_t * target, -1)
    bs = tf.reduce_sum(p_s * target, -1)
    tckd = bt * (tf.math.log(bt + eps) - tf.math.log(bs + eps)) + (1 - bt) * (
        tf.math.log(1 - bt + eps) - tf.math.log(1 - bs + eps)
    )
    masked = -1e9 * target  # the target class out of the softmax
    log_qt = tf.nn.log_softmax(t + masked)
    log_qs = tf.nn.log_softmax(s + masked)
    nckd = tf.reduce_sum(tf.exp(log_qt) * (log_qt - log_qs) * (1 - target), -1)
    return (alpha * tckd + beta * nckd) * temperature**2


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
    soft_params: dict | None = None,
):
    """Returns per-example `(total, soft, hard)` with `total = w.soft*soft + w.hard*hard`."""
    soft = soft_loss(teacher_logits, student_logits, temperature, soft_kind, labels, soft_params)
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
