"""Losses against numpy, computed by hand."""

import numpy as np
import pytest

from kdq_tf.distill.losses import (
    LossWeights,
    distillation_loss,
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
