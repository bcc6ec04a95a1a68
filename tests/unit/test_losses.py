"""Losses against numpy, computed by hand."""

import numpy as np
import pytest

from kdq_tf.distill.losses import (
    LossWeights,
    dist_loss,
    distillation_loss,
    dkd_loss,
    hard_loss,
    soft_loss,
    soft_threshold,
)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


RNG = np.random.default_rng(0)
T_LOGITS = RNG.normal(size=(5, 4)).astype(np.float32) * 3
S_LOGITS = RNG.normal(size=(5, 4)).astype(np.float32) * 3
Y = np.array([0, 3, 1, 2, 3])


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_soft_loss_kl_and_ce_scaled_by_t2(temperature):
    p_t = np_softmax(T_LOGITS / temperature)
    p_s = np_softmax(S_LOGITS / temperature)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1) * temperature**2
    ce = -(p_t * np.log(p_s)).sum(-1) * temperature**2
    np.testing.assert_allclose(
        soft_loss(T_LOGITS, S_LOGITS, temperature, "kl").numpy(), kl, rtol=1e-5
    )
    np.testing.assert_allclose(
        soft_loss(T_LOGITS, S_LOGITS, temperature, "ce").numpy(), ce, rtol=1e-5
    )


def test_soft_loss_zero_when_equal():
    np.testing.assert_allclose(soft_loss(T_LOGITS, T_LOGITS, 4.0).numpy(), 0.0, atol=1e-5)


def test_hard_losses():
    p = np_softmax(S_LOGITS)
    onehot = np.eye(4)[Y]
    np.testing.assert_allclose(
        hard_loss(Y, S_LOGITS, "ce").numpy(), -np.log(p[np.arange(5), Y]), rtol=1e-5
    )
    np.testing.assert_allclose(
        hard_loss(Y, S_LOGITS, "mse").numpy(), ((p - onehot) ** 2).mean(-1), rtol=1e-5
    )


def test_both_parametrisations():
    soft = soft_loss(T_LOGITS, S_LOGITS, 2.0).numpy()
    hard = hard_loss(Y, S_LOGITS).numpy()
    total, _, _ = distillation_loss(Y, T_LOGITS, S_LOGITS, 2.0, LossWeights.from_config(lam=0.3))
    np.testing.assert_allclose(total.numpy(), soft + 0.3 * hard, rtol=1e-5)
    total, _, _ = distillation_loss(Y, T_LOGITS, S_LOGITS, 2.0, LossWeights.from_config(alpha=0.1))
    np.testing.assert_allclose(total.numpy(), 0.1 * hard + 0.9 * soft, rtol=1e-5)
    assert LossWeights.from_config() == LossWeights(1.0, 0.5)
    with pytest.raises(ValueError, match="not both"):
        LossWeights.from_config(lam=0.5, alpha=0.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        LossWeights.from_config(alpha=-0.1)


def test_soft_threshold_values():
    out = soft_threshold(np.array([0.2, 0.3, 0.6, -0.05, -0.6], np.float32), 0.1)
    np.testing.assert_allclose(out, [0.1, 0.2, 0.5, 0.0, -0.5], atol=1e-7)


def np_pearson(a, b, axis):
    a = a - a.mean(axis, keepdims=True)
    b = b - b.mean(axis, keepdims=True)
    return (a * b).sum(axis) / np.sqrt((a * a).sum(axis) * (b * b).sum(axis))


@pytest.mark.parametrize("temperature, beta, gamma", [(1.0, 1.0, 1.0), (4.0, 2.0, 0.5)])
def test_dist_is_the_papers_formula(temperature, beta, gamma):
    """DIST (Huang et al. 2022, eq. 6-8): 1 - Pearson per example across classes (inter) and
    per class across the batch (intra), both on softmax(z / T), times T^2."""
    p_s = np_softmax(S_LOGITS / temperature)
    p_t = np_softmax(T_LOGITS / temperature)
    inter = 1 - np_pearson(p_s, p_t, axis=1)  # (batch,)
    intra = (1 - np_pearson(p_s, p_t, axis=0)).mean()  # one value for the batch
    want = (beta * inter + gamma * intra) * temperature**2
    got = dist_loss(T_LOGITS, S_LOGITS, temperature, beta, gamma).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert got.mean() == pytest.approx(want.mean(), rel=1e-4)  # the batch's loss
    # the same predictions: zero
    np.testing.assert_allclose(dist_loss(T_LOGITS, T_LOGITS, temperature).numpy(), 0, atol=1e-5)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_is_the_papers_formula_and_decomposes_kd(temperature):
    """DKD (Zhao et al. 2022, eq. 1-7): TCKD, a binary KL on [p_target, 1 - p_target]; NCKD, the
    KL of the distributions over the non-target classes; and KD = TCKD + (1 - p_t) NCKD."""
    pt, ps = np_softmax(T_LOGITS / temperature), np_softmax(S_LOGITS / temperature)
    idx = np.arange(len(Y))
    bt, bs = pt[idx, Y], ps[idx, Y]
    tckd = bt * np.log(bt / bs) + (1 - bt) * np.log((1 - bt) / (1 - bs))
    others = np.ones_like(pt, bool)
    others[idx, Y] = False
    qt = (pt * others) / (pt * others).sum(-1, keepdims=True)
    qs = (ps * others) / (ps * others).sum(-1, keepdims=True)
    nckd = np.where(others, qt * (np.log(qt + 1e-30) - np.log(qs + 1e-30)), 0).sum(-1)
    t2 = temperature**2
    np.testing.assert_allclose(
        dkd_loss(Y, T_LOGITS, S_LOGITS, temperature, 1.0, 0.0).numpy(), tckd * t2, rtol=1e-4
    )
    np.testing.assert_allclose(
        dkd_loss(Y, T_LOGITS, S_LOGITS, temperature, 0.0, 1.0).numpy(), nckd * t2, rtol=1e-4
    )
    np.testing.assert_allclose(
        dkd_loss(Y, T_LOGITS, S_LOGITS, temperature, 1.0, 8.0).numpy(),
        (tckd + 8 * nckd) * t2,
        rtol=1e-4,
    )
    kd = soft_loss(T_LOGITS, S_LOGITS, temperature, "kl").numpy()
    np.testing.assert_allclose(kd, (tckd + (1 - bt) * nckd) * t2, rtol=1e-4)


def test_soft_loss_dispatches_with_defaults_and_needs_labels_for_dkd():
    np.testing.assert_allclose(
        soft_loss(T_LOGITS, S_LOGITS, 2.0, "dist").numpy(),
        dist_loss(T_LOGITS, S_LOGITS, 2.0, 1.0, 1.0).numpy(),
    )
    np.testing.assert_allclose(
        soft_loss(T_LOGITS, S_LOGITS, 2.0, "dkd", Y, {"beta": 2.0}).numpy(),
        dkd_loss(Y, T_LOGITS, S_LOGITS, 2.0, 1.0, 2.0).numpy(),
    )
    with pytest.raises(ValueError, match="needs the labels"):
        soft_loss(T_LOGITS, S_LOGITS, 2.0, "dkd")
    total, soft, _ = distillation_loss(Y, T_LOGITS, S_LOGITS, 2.0, soft_kind="dkd")
    np.testing.assert_allclose(soft.numpy(), dkd_loss(Y, T_LOGITS, S_LOGITS, 2.0).numpy())


def test_dist_gradients_stay_finite_with_zero_variance():
    """A batch of one (no spread over the batch) and a student whose logits are all equal (no
    spread over the classes): DIST's correlations have zero variance there, and the gradient
    must not turn into NaN."""
    import tensorflow as tf

    for s in (S_LOGITS[:1], np.zeros((5, 4), np.float32)):
        teacher = T_LOGITS[: len(s)]
        z = tf.Variable(s)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(dist_loss(teacher, z, 4.0))
        grad = tape.gradient(loss, z).numpy()
        assert np.isfinite(loss.numpy()) and np.all(np.isfinite(grad)), grad
