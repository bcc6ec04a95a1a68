"""Named data sets -> tf.data pipelines, with the metadata later stages need.

The arrays stay uint8 (or the user's float) in memory; normalisation and
augmentation run in the tf.data pipeline, never inside a model, so that the
student exported to the device sees exactly what `Preprocess` describes.
"""

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kdq_tf.config import DataConfig
from kdq_tf.data import readers as datasets
from kdq_tf.data.images import Preprocess
from kdq_tf.errors import DataError

if (
    TYPE_CHECKING
):  # kdq_tf.data.augment imports TensorFlow; data.py loads without it until a pipeline is built
    from kdq_tf.data.augment import Augment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    source: str  # where the data was read from
    input_shape: tuple[int, int, int]  # (H, W, C)
    class_names: tuple[str, ...]
    n_train: int
    n_val: int
    n_test: int
    preprocess: Preprocess

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Dataset:
    """Split arrays plus metadata; `pipeline()` makes the tf.data view of a split."""

    info: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    config: DataConfig
    # Rows of the raw training set that became train and val: files of per-sample teacher
    # logits are indexed by raw row, so one file serves every seed's split.
    train_index: np.ndarray | None = None
    val_index: np.ndarray | None = None
    raw_fingerprint: str = ""  # of the raw training images and labels, before --limit and the split

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {name!r}")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def augmentation(self) -> "Augment":
        """The config's augmentation (crop with padding, flip, erasing)."""
        from kdq_tf.data.augment import Augment

        c = self.config
        return Augment(flip=c.flip, translate=c.translate, erase=c.erase, mixup=c.mixup)

    def resolve_augment(self, augment: "bool | Augment | None", training: bool):
        """An `Augment` or None: `augment` itself, the config's for True, none for False; None
        follows `config.augment` when training."""
        from kdq_tf.data.augment import Augment

        if augment is None:
            augment = self.config.augment and training
        if isinstance(augment, Augment):
            return augment
        return self.augmentation() if augment else None

    def pipeline(
        self,
        split: str,
        *,
        training: bool = False,
        extra: np.ndarray | None = None,
        augment: "bool | Augment | None" = None,
        batch_size: int | None = None,
        seed: int = 0,
        soft_labels: bool = False,
    ):
        """Returns a batched `tf.data.Dataset` of `(x, y)`, or `(x, (y, extra))`.

        Args:
            split: "train", "val" or "test".
            training: shuffle each epoch. Defaults to False.
            extra: per-sample array carried along (e.g. cached teacher logits).
            augment: an `Augment`, True for the config's, False for none; defaults to
                `config.augment` when training. Each sample gets a fresh seed per epoch.
            batch_size: defaults to `config.batch_size`.
            seed: shuffle and augmentation seed.
            soft_labels: `y` as one-hot rows, mixed like the images under mixup (the scratch
                twin's targets; a mixed image has no one label). Without extra only.
        """
        from kdq_tf._keras import tf
        from kdq_tf.data.augment import mixed_view

        x, y = self.split(split)
        aug = self.resolve_augment(augment, training)
        if aug is not None and aug.mixup and split != "train":
            raise ValueError(f"mixup mixes training images; the {split} split is not augmented")
        if soft_labels and extra is not None:
            raise ValueError("soft_labels replaces y; it does not carry an extra array")
        items = (x, y) if extra is None else (x, (y, extra))
        ds = tf.data.Dataset.from_tensor_slices(items)
        if training:
            ds = ds.shuffle(min(len(x), 10_000), seed=seed, reshuffle_each_iteration=True)
        normalize = self._normalizer()
        k = self.info.num_classes
        if aug is not None and aug.active:
            partners = tf.constant(x) if aug.mixup else None
            labels = tf.one_hot(y, k) if aug.mixup else None

            def view(item, s):
                v, j, lam = mixed_view(item[0], s, aug, partners, normalize)
                if not soft_labels:
                    return v, item[1]
                own = tf.one_hot(item[1], k)
                return v, own if labels is None else lam * own + (1 - lam) * labels[j]

            # A fresh stateless seed per sample and epoch: (x, rest), (2,) int64.
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip((ds, seeds)).map(view, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(
                lambda xi, rest: (normalize(xi), tf.one_hot(rest, k) if soft_labels else rest),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        return ds.batch(batch_size or self.config.batch_size).prefetch(tf.data.AUTOTUNE)

    def _normalizer(self):
        from kdq_tf._keras import tf

        pre = self.info.preprocess
        scale = tf.constant(pre.scale, tf.float32)
        mean = tf.constant(pre.mean, tf.float32)
        std = tf.constant(pre.std, tf.float32)
        return lambda xi: (tf.cast(xi, tf.float32) * scale - mean) / std

    def view_pipeline(
        self, aug: "Augment", view: int, base_seed: int, batch_size: int | None = None
    ):
        """View `view` of every training image, in order, as in a K-view cache: `(x, y)` batches.

        The seed of each image depends only on (base_seed, view, index), so the same
        bytes come back on every call. Under mixup the partners are this split's training
        images: mixed views belong to one split.
        """
        from kdq_tf._keras import tf
        from kdq_tf.data.augment import mixed_view, view_seed

        normalize = self._normalizer()
        partners = tf.constant(self.x_train) if aug.mixup else None
        ds = tf.data.Dataset.from_tensor_slices((self.x_train, self.y_train, self._raw_rows()))
        ds = ds.map(
            lambda xi, yi, i: (
                mixed_view(xi, view_seed(base_seed, view, i), aug, partners, normalize)[0],
                yi,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return ds.batch(batch_size or self.config.batch_size).prefetch(tf.data.AUTOTUNE)

    def views_training_pipeline(
        self,
        aug: "Augment",
        view_logits: np.ndarray,
        base_seed: int,
        seed: int = 0,
        batch_size: int | None = None,
    ):
        """Endless `(x, (y, teacher_logits))` batches that walk through the K cached views.

        Each view is one epoch of `ceil(n_train / batch)` batches: fit with that many
        `steps_per_epoch` and epoch e trains on view e mod K, shuffled anew each pass.

        Args:
            aug: the augmentation the views were made with.
            view_logits: (K, n_train, classes) teacher logits of the views.
            base_seed: the views' seed (the cache's).
            seed: shuffle seed.
        """
        from kdq_tf._keras import tf
        from kdq_tf.data.augment import mixed_view, view_seed

        k, n = view_logits.shape[0], len(self.x_train)
        x, y, rows = (
            tf.constant(self.x_train),
            tf.constant(self.y_train),
            tf.constant(self._raw_rows()),
        )
        logits = tf.constant(view_logits, tf.float32)
        normalize = self._normalizer()
        b = batch_size or self.config.batch_size

        def one_view(v):
            idx = tf.data.Dataset.range(n).shuffle(
                min(n, 10_000), seed=seed, reshuffle_each_iteration=True
            )
            return idx.map(
                lambda i: (
                    mixed_view(
                        tf.gather(x, i), view_seed(base_seed, v, rows[i]), aug, x, normalize
                    )[0],
                    (tf.gather(y, i), logits[v, i]),
                ),
                num_parallel_calls=tf.data.AUTOTUNE,
            ).batch(b)

        return tf.data.Dataset.range(k).repeat().flat_map(one_view).prefetch(tf.data.AUTOTUNE)

    def _raw_rows(self) -> np.ndarray:
        return self.train_index if self.train_index is not None else np.arange(len(self.x_train))

    def sample(self, split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Up to n normalised samples of a split (representative sets, checks)."""
        x, y = self.split(split)
        idx = np.random.default_rng(seed).permutation(len(x))[:n]
        return self.info.preprocess.apply(x[idx]), y[idx]


def _preprocess(x_train: np.ndarray, mode: str) -> Preprocess:
    c = x_train.shape[-1]
    scale = 1.0 / 255.0 if x_train.dtype == np.uint8 and mode != "none" else 1.0
    if mode == "standard":
        xs = x_train.astype(np.float64) * scale
        mean = tuple(float(m) for m in xs.mean(axis=(0, 1, 2)))
        std = tuple(max(float(s), 1e-6) for s in xs.std(axis=(0, 1, 2)))
        return Preprocess(scale, mean, std)
    return Preprocess(scale, (0.0,) * c, (1.0,) * c)


def load_dataset(cfg: DataConfig, seed: int = 0) -> Dataset:
    """Finds, reads, validates and splits a data set.

    Args:
        cfg: the data section of the config.
        seed: seeds the train/validation split.

    Returns:
        A `Dataset` with train/val/test arrays, metadata and `pipeline()`.

    Raises:
        DataError: missing data (the message says where it looked and how to get it),
            malformed files, mismatched lengths, labels out of range, images under 8x8.
    """
    raw = datasets.load_raw(cfg.dataset, cfg.data_dir, seed=seed)
    datasets.validate(raw)
    raw_fp = fingerprint(raw.x_train, raw.y_train.astype(np.int64))
    x_tr, y_tr = raw.x_train, raw.y_train.astype(np.int64)
    x_te, y_te = raw.x_test, raw.y_test.astype(np.int64)
    if cfg.limit:
        x_tr, y_tr, x_te, y_te = (
            x_tr[: cfg.limit],
            y_tr[: cfg.limit],
            x_te[: cfg.limit],
            y_te[: cfg.limit],
        )
    order = np.random.default_rng(seed).permutation(len(x_tr))
    n_val = int(round(len(x_tr) * cfg.val_split))
    if n_val and len(x_tr) - n_val < 1:
        raise DataError(
            f"val_split {cfg.val_split} leaves no training data out of {len(x_tr)} samples"
        )
    val_idx, tr_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    if len(tr_idx) < len(raw.class_names):
        raise DataError(
            f"{len(tr_idx)} training samples for {len(raw.class_names)} classes "
            f"(limit {cfg.limit}, "
            f"val_split {cfg.val_split}); use at least one sample per class"
        )
    x_val, y_val, x_tr, y_tr = x_tr[val_idx], y_tr[val_idx], x_tr[tr_idx], y_tr[tr_idx]
    name = cfg.dataset.split(":", 1)[0] if ":" in cfg.dataset else cfg.dataset
    info = DatasetInfo(
        name=name,
        source=raw.source,
        input_shape=tuple(int(d) for d in x_tr.shape[1:]),
        class_names=raw.class_names,
        n_train=len(x_tr),
        n_val=len(x_val),
        n_test=len(x_te),
        preprocess=_preprocess(x_tr, cfg.normalize),
    )
    log.info(
        "data %s from %s: %d train, %d val, %d test, shape %s",
        name,
        raw.source,
        info.n_train,
        info.n_val,
        info.n_test,
        info.input_shape,
    )
    return Dataset(info, x_tr, y_tr, x_val, y_val, x_te, y_te, cfg, tr_idx, val_idx, raw_fp)


def fingerprint(*arrays: np.ndarray) -> str:
    """A short hash of arrays' shapes, dtypes and bytes: caches and logits files record it."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]
