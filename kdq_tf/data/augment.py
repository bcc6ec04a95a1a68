"""Image augmentation for training: random crop with padding, horizontal flip, random erasing,
and mixup with a second training image.

Every op is stateless: the same (image, seed) pair always gives the same bytes. Training
draws a fresh seed per sample and epoch; the K-view cache derives the seed from
(view, sample index), so the images the teacher scored can be rebuilt exactly after a
reload, and the student trains on the very views the teacher's logits describe.
"""

import math
from dataclasses import dataclass

from kdq_tf._keras import tf

# Random erasing (Zhong et al. 2017): erased area 2-40% of the image, aspect ratio 0.3-3.3.
_ERASE_AREA = (0.02, 0.4)
_ERASE_LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))


@dataclass(frozen=True)
class Augment:
    """What one augmented view does. All fields off means the identity."""

    flip: bool = True  # horizontal flip with probability 1/2
    translate: int = 2  # zero-pad by this many pixels, crop back: shifts of up to +-translate
    erase: float = 0.0  # probability of zeroing one random rectangle
    # Mixup (Zhang et al. 2018) as function matching uses it (Beyer et al. 2022): each view is
    # lam * view + (1 - lam) * a view of another training image, lam ~ Beta(mixup, mixup).
    # 0 is off. A mixed image has no one label, so the student learns it from the teacher.
    mixup: float = 0.0

    def __post_init__(self):
        if self.translate < 0:
            raise ValueError(f"translate must be >= 0, got {self.translate}")
        if not 0.0 <= self.erase <= 1.0:
            raise ValueError(f"erase must be a probability in [0, 1], got {self.erase}")
        if self.mixup < 0:
            raise ValueError(f"mixup must be >= 0 (a Beta distribution's a), got {self.mixup}")

    @property
    def active(self) -> bool:
        return self.flip or self.translate > 0 or self.erase > 0 or self.mixup > 0

    def to_dict(self) -> dict:
        d = {"flip": self.flip, "translate": self.translate, "erase": self.erase}
        # without mixup, the dict (and the cache keys made from it) stay what they were
        return {**d, "mixup": self.mixup} if self.mixup else d


def augment_image(x, seed, aug: Augment):
    """One augmented view of a normalised image.

    Args:
        x: (H, W, C) float32, already normalised.
        seed: (2,) integer tensor; equal seeds give equal outputs.
        aug: what to apply.

    Returns:
        (H, W, C) float32.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)  # (3, 2): one per op
    if aug.translate:
        t = aug.translate
        x = tf.image.stateless_random_crop(
            tf.pad(x, [[t, t], [t, t], [0, 0]]), tf.shape(x), seed=seeds[0]
        )
    if aug.flip:
        x = tf.image.stateless_random_flip_left_right(x, seed=seeds[1])
    if aug.erase > 0:
        x = _erase(x, seeds[2], aug.erase)
    return x


def _erase(x, seed, p: float):
    h, w = x.shape[0], x.shape[1]
    u = tf.random.stateless_uniform(
        [5], seed=seed
    )  # every draw from one call: cheaper, same determinism
    area = (_ERASE_AREA[0] + u[1] * (_ERASE_AREA[1] - _ERASE_AREA[0])) * float(h * w)
    aspect = tf.exp(_ERASE_LOG_ASPECT[0] + u[2] * (_ERASE_LOG_ASPECT[1] - _ERASE_LOG_ASPECT[0]))
    eh = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), 1, h)
    ew = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), 1, w)
    y0 = tf.cast(tf.floor(u[3] * tf.cast(h - eh + 1, tf.float32)), tf.int32)
    x0 = tf.cast(tf.floor(u[4] * tf.cast(w - ew + 1, tf.float32)), tf.int32)
    rows, cols = tf.range(h), tf.range(w)
    inside = ((rows >= y0) & (rows < y0 + eh))[:, None] & ((cols >= x0) & (cols < x0 + ew))[None, :]
    # Zero is the normalised background for unit-scaled data; a constant keeps views reproducible.
    return tf.where((inside & (u[0] < p))[:, :, None], tf.zeros_like(x), x)


def view_seed(base: int, view, index):
    """The stateless seed of view `view` of sample `index` in a K-view cache."""
    return tf.stack(
        [tf.cast(base, tf.int64) * 1_000_003 + tf.cast(view, tf.int64), tf.cast(index, tf.int64)]
    )


def mix_draw(seed, n, alpha: float):
    """The draws of one mixed view, from the view's own seed: the partner's position in
    [0, n), the weight lam ~ Beta(alpha, alpha) of the image itself, and the seed of the
    partner's augmentation. Derived by folding the seed, so the image's own augmentation
    (which uses the seed as it is) is the same with mixup as without."""
    seed = tf.cast(seed, tf.int64)
    s = [tf.random.experimental.stateless_fold_in(seed, k) for k in (1, 2, 3)]
    j = tf.random.stateless_uniform(
        [], seed=s[0], minval=0, maxval=tf.cast(n, tf.int64), dtype=tf.int64
    )
    g = tf.random.stateless_gamma([2], seed=s[1], alpha=alpha)  # Beta from two Gammas
    # Small alphas can round both draws to 0; lam = 0 (the partner alone) is a valid mix.
    return j, tf.math.divide_no_nan(g[0], g[0] + g[1]), s[2]


def mixed_view(x, seed, aug: Augment, partners, normalize):
    """One augmented view of the raw image `x`, mixed with one of `partners` (the split's raw
    training images) when `aug.mixup` is set. Returns `(view, partner position, lam)`;
    without mixup the partner is -1 and lam 1.

    Args:
        x: (H, W, C) raw image.
        seed: (2,) integer tensor; equal seeds give equal outputs.
        partners: (N, H, W, C) tensor, or None without mixup.
        normalize: raw image -> normalised float32 image.
    """
    view = augment_image(normalize(x), seed, aug)
    if not aug.mixup:
        return view, tf.constant(-1, tf.int64), tf.constant(1.0)
    j, lam, s = mix_draw(seed, tf.shape(partners, out_type=tf.int64)[0], aug.mixup)
    other = augment_image(normalize(tf.gather(partners, j)), s, aug)
    return lam * view + (1.0 - lam) * other, j, lam
