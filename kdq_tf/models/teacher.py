"""The ResNet50 teacher behind an input adapter, or a user's .keras teacher."""

import logging
import os
from pathlib import Path

import numpy as np

from kdq_tf._keras import keras
from kdq_tf.config import TeacherConfig
from kdq_tf.data.images import Preprocess
from kdq_tf.errors import ModelError

log = logging.getLogger(__name__)

IMAGENET_NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
# keras.applications.resnet "caffe" preprocessing: BGR order, per-channel mean, no scaling.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def keras_models_dir() -> Path:
    """Where keras.applications caches weight files (`$KERAS_HOME/models`)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def imagenet_weights() -> str:
    """The cached ImageNet notop file if present, else "imagenet" (Keras downloads it).

    Passing the cached path loads it directly; Keras's own lookup would re-download
    a file whose md5 differs from the published one.
    """
    cached = keras_models_dir() / IMAGENET_NOTOP
    return str(cached) if cached.is_file() else "imagenet"


def _preprocess_kernel(
    channels: int, pre: Preprocess, raw_max: float
) -> tuple[np.ndarray, np.ndarray]:
    # Undo the pipeline's normalisation, map to 0..255 pixels, RGB->BGR, subtract the ImageNet mean:
    # out[o] = k * (std[i] * x[i] + mean[i]) - mean_bgr[o], k = 255 / (scale * raw_max).
    k = 255.0 / (pre.scale * raw_max)
    kernel = np.zeros((1, 1, channels, 3), np.float32)
    bias = np.zeros(3, np.float32)
    for o in range(3):
        i = 0 if channels == 1 else 2 - o
        kernel[0, 0, i, o] = k * pre.std[i]
        bias[o] = k * pre.mean[i] - _CAFFE_MEAN_BGR[o]
    return kernel, bias


def build_teacher(
    input_shape: tuple[int, int, int],
    num_classes: int,
    cfg: TeacherConfig = TeacherConfig(),
    preprocess: Preprocess | None = None,
    raw_max: float = 255.0,
    logits_dtype: str | None = None,
) -> keras.Model:
    """ResNet50 (no top) behind an adapter that pads/resizes and maps channels to 3,
    or, with `cfg.arch == "cnn"`, the plain CNN of `build_cnn_teacher`.

    Args:
        input_shape: the data's (H, W, C), C in {1, 3}.
        num_classes: size of the logits layer.
        cfg: teacher config (weights, adapter, input_size).
        preprocess: the data pipeline's normalisation, undone by the adapter so the
            backbone sees ImageNet-style inputs. Defaults to x/255.
        raw_max: the largest raw pixel value (255 for uint8 data).
        logits_dtype: dtype of the logits layer ("float32" under mixed precision).
            Defaults to the global policy.

    Returns:
        A functional model `(H, W, C) -> (num_classes,)` logits.

    Raises:
        ModelError: if ImageNet weights are asked for but cannot be obtained.
    """
    if cfg.arch == "cnn":
        return build_cnn_teacher(input_shape, num_classes, cfg.width, logits_dtype)
    h, w, c = input_shape
    preprocess = preprocess or Preprocess(1.0 / 255.0, (0.0,) * c, (1.0,) * c)
    s = cfg.input_size
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if cfg.adapter == "pad" and h <= s and w <= s:
        if (h, w) != (s, s):
            top, left = (s - h) // 2, (s - w) // 2
            x = keras.layers.ZeroPadding2D(
                ((top, s - h - top), (left, s - w - left)), name="adapter_pad"
            )(x)
    else:
        x = keras.layers.Resizing(s, s, name="adapter_resize")(x)
    kernel, bias = _preprocess_kernel(c, preprocess, raw_max)
    to_rgb = keras.layers.Conv2D(3, 1, name="adapter_imagenet_preprocess", trainable=False)
    x = to_rgb(x)  # (batch, s, s, 3) in caffe-style BGR
    to_rgb.set_weights([kernel, bias])
    weights = None
    if cfg.weights == "imagenet":
        weights = imagenet_weights()
    try:
        backbone = keras.applications.ResNet50(
            include_top=False, weights=weights, input_shape=(s, s, 3), pooling="avg"
        )
    except Exception as e:  # download or file errors surface as many exception types
        raise ModelError(
            f"could not load ImageNet weights for ResNet50 ({type(e).__name__}: {e}); "
            f"put {IMAGENET_NOTOP} "
            f"in {keras_models_dir()} or use --weights none"
        ) from None
    # Keras's BN momentum 0.99 needs ~500 steps before the moving statistics match the
    # data; short CPU runs stop long before that and evaluate badly. 0.9 (PyTorch's
    # default) settles in ~50 steps.
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    x = backbone(x)  # (batch, 2048)
    outputs = keras.layers.Dense(num_classes, name="logits", dtype=logits_dtype)(x)
    return keras.Model(inputs, outputs, name="resnet50_teacher")


def build_cnn_teacher(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: int = 48,
    logits_dtype: str | None = None,
) -> keras.Model:
    """A VGG-style teacher: three stages of two 3x3 conv-BN-ReLU (width, 2x, 4x), GAP, dense.

    ResNet50's stem divides the input by 4 at once, so a 28x28 image becomes 8x8 before
    the first residual block. This network keeps the full resolution in its first
    stage and costs less per image on small inputs (`python benchmarks/teacher_speed.py
    --archs resnet50,cnn` measures both), and it errs differently from ResNet50, which is
    what a fusion of the two needs. It reads the pipeline's normalised input as is.
    """
    L = keras.layers
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, (filters, stride) in enumerate([(1, 1), (1, 1), (2, 2), (2, 1), (4, 2), (4, 1)]):
        x = L.Conv2D(
            width * filters, 3, strides=stride, padding="same", use_bias=False, name=f"c{i}_conv"
        )(x)
        x = L.BatchNormalization(momentum=0.9, name=f"c{i}_bn")(x)  # 0.9: see build_teacher
        x = L.ReLU(name=f"c{i}_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(num_classes, name="logits", dtype=logits_dtype)(x)
    return keras.Model(inputs, outputs, name=f"cnn{width}_teacher")


def backbone_of(model: keras.Model) -> keras.Model | None:
    """The nested ResNet50 of a `build_teacher` model, or None for a user model."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name.startswith("resnet50"):
            return layer
    return None


def load_teacher(
    path: str | Path, input_shape: tuple[int, ...], num_classes: int, unsafe: bool = False
) -> keras.Model:
    """Loads a user's `.keras` teacher with Keras safe mode on (unless `unsafe`).

    Raises:
        ModelError: the file is missing, not a Keras model, holds code that safe
            mode refuses, or its input/output shapes do not fit the data.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"teacher file {p} does not exist")
    try:
        model = keras.models.load_model(p, safe_mode=not unsafe, compile=False)
    except ValueError as e:
        if "safe_mode" in str(e) or "Lambda" in str(e):
            raise ModelError(
                f"{p} contains a Lambda layer (arbitrary code); Keras safe mode refuses it. "
                "Pass --unsafe-load only if you trust the file"
            ) from None
        raise ModelError(f"{p} is not a loadable Keras model ({str(e).splitlines()[0]})") from None
    except Exception as e:
        raise ModelError(f"{p} is not a loadable Keras model ({type(e).__name__})") from None
    check_io(model, input_shape, num_classes, what=f"teacher {p}")
    return model


def check_io(model: keras.Model, input_shape: tuple[int, ...], num_classes: int, what: str) -> None:
    """Raises ModelError unless the model takes `input_shape` images and gives `num_classes`
    outputs."""
    if not isinstance(model.output_shape, tuple) or model.output_shape[-1] != num_classes:
        raise ModelError(
            f"{what} outputs {model.output_shape}, but the data has {num_classes} classes; "
            "train or pick a model with one output per class"
        )
    expected = tuple(model.input_shape[1:]) if isinstance(model.input_shape, tuple) else None
    if (
        expected is None
        or any(e is not None and e != d for e, d in zip(expected, input_shape))
        or len(expected) != len(input_shape)
    ):
        raise ModelError(
            f"{what} expects inputs {model.input_shape}, but the data is {tuple(input_shape)}"
        )
