import numpy as np
import pytest

from kdq_tf._keras import keras
from kdq_tf.config import TeacherConfig
from kdq_tf.data.images import Preprocess
from kdq_tf.errors import ModelError
from kdq_tf.models import teacher as T
from kdq_tf.teacher.recipe import teacher_phases


@pytest.mark.parametrize(
    "shape,cfg,adapter",
    [
        ((28, 28, 1), TeacherConfig(), "adapter_pad"),
        ((40, 40, 3), TeacherConfig(), "adapter_resize"),
        ((28, 28, 1), TeacherConfig(adapter="resize", input_size=48), "adapter_resize"),
    ],
)
def test_adapter_shapes(shape, cfg, adapter):
    m = T.build_teacher(shape, 7, cfg)
    names = [layer.name for layer in m.layers]
    assert adapter in names
    s = cfg.input_size
    assert m.get_layer("adapter_imagenet_preprocess").output_shape == (None, s, s, 3)
    assert m.output_shape == (None, 7)
    assert m.predict(np.zeros((2, *shape), np.float32), verbose=0).shape == (2, 7)


def test_adapter_applies_caffe_preprocessing():
    # Unit-normalised grey input 0.5 -> pixel 127.5 in all three channels, minus the BGR means.
    pre = Preprocess(1 / 255, (0.0,), (1.0,))
    m = T.build_teacher((32, 32, 1), 3, TeacherConfig(), pre)
    sub = keras.Model(m.input, m.get_layer("adapter_imagenet_preprocess").output)
    out = sub.predict(np.full((1, 32, 32, 1), 0.5, np.float32), verbose=0)[0, 0, 0]
    np.testing.assert_allclose(out, 127.5 - np.array([103.939, 116.779, 123.68]), rtol=1e-5)
    # RGB input: channels are swapped to BGR.
    m3 = T.build_teacher(
        (32, 32, 3), 3, TeacherConfig(), Preprocess(1 / 255, (0.0,) * 3, (1.0,) * 3)
    )
    sub3 = keras.Model(m3.input, m3.get_layer("adapter_imagenet_preprocess").output)
    x = np.zeros((1, 32, 32, 3), np.float32)
    x[..., 0] = 1.0  # pure red
    np.testing.assert_allclose(
        sub3.predict(x, verbose=0)[0, 0, 0], [-103.939, -116.779, 255 - 123.68], rtol=1e-5
    )


def test_cnn_teacher_keeps_the_input_resolution():
    m = T.build_teacher((28, 28, 1), 7, TeacherConfig(arch="cnn", width=8))
    assert (
        m.output_shape == (None, 7) and T.backbone_of(m) is None
    )  # one training phase, no adapter
    assert m.get_layer("c1_conv").output_shape == (
        None,
        28,
        28,
        8,
    )  # full resolution in the first stage
    assert m.get_layer("c5_conv").output_shape == (
        None,
        7,
        7,
        32,
    )  # width x4 after two stride-2 convs
    # conv kernels 9*(1*8 + 8*8 + 8*16 + 16*16 + 16*32 + 32*32), BN 4 per channel, dense 32*7 + 7
    convs = 9 * (8 + 64 + 128 + 256 + 512 + 1024)
    assert m.count_params() == convs + 4 * (8 + 8 + 16 + 16 + 32 + 32) + 32 * 7 + 7
    assert teacher_phases(m, TeacherConfig(arch="cnn"), steps_per_epoch=2)[0].name == "train"


def test_imagenet_weights_from_keras_cache(tmp_path, monkeypatch):
    # The real file can't be downloaded here: put a weights file where Keras looks for it.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    donor = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    donor.save_weights(str(tmp_path / "models" / T.IMAGENET_NOTOP))
    m = T.build_teacher((28, 28, 1), 10, TeacherConfig(weights="imagenet"))
    backbone = T.backbone_of(m)
    for a, b in zip(backbone.get_weights(), donor.get_weights()):
        np.testing.assert_array_equal(a, b)
    phases = teacher_phases(
        m, TeacherConfig(weights="imagenet", head_epochs=1, epochs=2), steps_per_epoch=3
    )
    assert [(p.name, p.epochs) for p in phases] == [("head", 1), ("finetune", 2)]
    phases[0].prepare(m)
    assert not backbone.trainable and m.get_layer("logits").trainable
    phases[1].prepare(m)
    assert backbone.trainable
    assert float(m.optimizer.learning_rate) == pytest.approx(1e-4)  # lr * finetune_lr_factor


def test_imagenet_weights_missing_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / T.IMAGENET_NOTOP).write_bytes(b"not an h5 file")
    with pytest.raises(ModelError, match="ImageNet weights"):
        T.build_teacher((28, 28, 1), 10, TeacherConfig(weights="imagenet"))


def _tiny(shape=(12, 12, 1), k=3):
    inp = keras.Input(shape)
    x = keras.layers.Flatten()(inp)
    return keras.Model(inp, keras.layers.Dense(k)(x))


def test_load_teacher_checks(tmp_path):
    p = tmp_path / "t.keras"
    _tiny().save(p)
    assert T.load_teacher(p, (12, 12, 1), 3).output_shape == (None, 3)
    with pytest.raises(ModelError, match="outputs .* 5 classes"):
        T.load_teacher(p, (12, 12, 1), 5)
    with pytest.raises(ModelError, match="expects inputs"):
        T.load_teacher(p, (28, 28, 1), 3)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"hello")
    with pytest.raises(ModelError, match="not a loadable Keras model"):
        T.load_teacher(junk, (12, 12, 1), 3)
    with pytest.raises(ModelError, match="does not exist"):
        T.load_teacher(tmp_path / "nope.keras", (12, 12, 1), 3)


def test_lambda_teacher_refused_in_safe_mode(tmp_path):
    inp = keras.Input((12, 12, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    m = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    p = tmp_path / "lam.keras"
    m.save(p)
    with pytest.raises(ModelError, match="--unsafe-load"):
        T.load_teacher(p, (12, 12, 1), 3)
    assert T.load_teacher(p, (12, 12, 1), 3, unsafe=True).output_shape == (None, 3)
