import gzip

import numpy as np
import pytest
from conftest import idx_bytes, separable_npz, write_idx_set
from PIL import Image

from kdq_tf.config import DataConfig
from kdq_tf.data import readers as datasets
from kdq_tf.data.dataset import load_dataset
from kdq_tf.errors import DataError


def test_read_idx_hand_made_bytes():
    # 2 images of 2x3, written byte by byte: magic 0,0,0x08,3 then dims 2,2,3 big-endian.
    raw = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(12))
    a = datasets.read_idx(raw)
    assert a.shape == (2, 2, 3) and a.dtype == np.uint8
    assert a[1, 0, 2] == 8
    with pytest.raises(DataError, match="bad magic"):
        datasets.read_idx(b"\x01\x00\x08\x01")
    with pytest.raises(DataError, match="bytes follow"):
        datasets.read_idx(raw[:-1])


def test_named_set_from_data_dir(tmp_path):
    arrays = write_idx_set(tmp_path / "fm")
    raw = datasets.load_named("fashion_mnist", str(tmp_path / "fm"), download=False)
    assert raw.x_train.shape == (40, 28, 28, 1)
    np.testing.assert_array_equal(raw.x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(raw.y_test, arrays["y_test"])
    assert raw.class_names[0] == "T-shirt/top" and raw.source == str(tmp_path / "fm")


def test_named_set_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    write_idx_set(tmp_path / "kh" / "datasets" / "fashion-mnist")
    raw = datasets.load_named("fashion_mnist", None, download=False)
    assert raw.source.endswith("datasets/fashion-mnist") and len(raw.x_test) == 20


def test_missing_named_set_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not found in .*empty.*kh/datasets"):
        datasets.load_named("mnist", str(tmp_path / "empty"), download=False)
    with pytest.raises(DataError, match="does not exist"):
        datasets.load_named("mnist", str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataError, match="unknown data set 'svhn'"):
        datasets.load_named("svhn")


def test_npz_source_and_checks(tmp_path):
    p = separable_npz(tmp_path / "a.npz", class_names=np.array(["a", "b", "c"]))
    raw = datasets.load_npz(str(p))
    assert raw.class_names == ("a", "b", "c") and raw.x_train.shape == (300, 12, 12, 1)
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((3, 9, 9)), y_train=np.zeros(3))
    with pytest.raises(DataError, match="lacks x_test, y_test"):
        datasets.load_npz(str(tmp_path / "bad.npz"))
    np.savez(
        tmp_path / "len.npz",
        x_train=np.zeros((3, 9, 9)),
        y_train=np.zeros(2),
        x_test=np.zeros((1, 9, 9)),
        y_test=np.zeros(1),
    )
    with pytest.raises(DataError, match="x_train has 3 samples but y_train has 2"):
        datasets.load_npz(str(tmp_path / "len.npz"))


def test_validate_labels_and_sizes(tmp_path):
    p = separable_npz(tmp_path / "a.npz", class_names=np.array(["a", "b"]))  # labels go up to 2
    with pytest.raises(DataError, match="labels must be 0..1"):
        datasets.validate(datasets.load_npz(str(p)))
    small = separable_npz(tmp_path / "s.npz", size=6)
    with pytest.raises(DataError, match="at least 8x8"):
        datasets.validate(datasets.load_npz(str(small)))


def test_image_dir(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / cls / f"{i}.png"
            )
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
        tmp_path / "imgs" / "dog" / "big.png"
    )
    raw = datasets.load_image_dir(str(tmp_path / "imgs"), test_fraction=0.25)
    assert raw.class_names == ("cat", "dog")
    assert raw.x_train.shape[1:] == (10, 10, 3)  # the odd 12x12 image was resized
    assert len(raw.x_train) + len(raw.x_test) == 11 and len(raw.x_test) == 3


def test_load_dataset_pipeline(tmp_path):
    p = separable_npz(tmp_path / "a.npz")
    data = load_dataset(DataConfig(dataset=f"npz:{p}", limit=100, val_split=0.2, batch_size=16))
    assert (data.info.n_train, data.info.n_val, data.info.n_test) == (80, 20, 100)
    x, y = next(iter(data.pipeline("test")))
    assert x.shape == (16, 12, 12, 1)
    np.testing.assert_allclose(x.numpy(), data.x_test[:16].astype(np.float32) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y.numpy(), data.y_test[:16])
    std = load_dataset(DataConfig(dataset=f"npz:{p}", normalize="standard"))
    xs = std.info.preprocess.apply(std.x_train)
    assert abs(xs.mean()) < 1e-4 and abs(xs.std() - 1) < 1e-3


def test_augmentation_keeps_shape_and_changes_pixels(tmp_path):
    p = separable_npz(tmp_path / "a.npz")
    data = load_dataset(
        DataConfig(dataset=f"npz:{p}", augment=True, translate=3, batch_size=300, val_split=0)
    )
    x_aug, _ = next(iter(data.pipeline("train", training=True)))
    x_plain, _ = next(iter(data.pipeline("train", training=True, augment=False)))
    assert x_aug.shape == x_plain.shape
    assert not np.allclose(
        np.sort(x_aug.numpy().ravel()), np.sort(x_plain.numpy().ravel())
    ) or not np.allclose(x_aug.numpy(), x_plain.numpy())


def test_gz_and_plain_idx_both_read(tmp_path):
    a = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8)
    (tmp_path / "x.gz").write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(datasets.read_idx(datasets._read_maybe_gz(tmp_path / "x.gz")), a)
