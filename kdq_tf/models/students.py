"""Student zoo. Every student is a flat Functional model of TF-MOT-supported layers,
because `quantize_model` rejects subclassed and nested models.

Conv -> BatchNorm -> ReLU triples are the pattern TF-MOT folds into one quantized
conv, which is also what the TFLite converter fuses for int8.
"""

from collections.abc import Callable
from pathlib import Path

from kdq_tf._keras import keras
from kdq_tf.errors import ModelError
from kdq_tf.models.teacher import check_io, load_teacher

L = keras.layers


def _bn(name: str):
    # Momentum 0.9 instead of Keras's 0.99: the moving statistics settle within ~50 steps,
    # so short runs evaluate correctly (0.99 needs ~500 steps before eval mode works).
    return L.BatchNormalization(momentum=0.9, name=name)


# The zoo's building blocks, public because the search space (kdq_tf.search.space) builds its
# candidates from the same ones.
def conv_bn_relu(
    x, filters: int, kernel: int = 3, stride: int = 1, name: str = "", relu6: bool = False
):
    x = L.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = _bn(name=f"{name}_bn")(x)
    return L.ReLU(max_value=6.0 if relu6 else None, name=f"{name}_relu")(x)


def depthwise_bn_relu(x, stride: int, name: str, relu6: bool = False, kernel: int = 3):
    x = L.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_dw"
    )(x)
    x = _bn(name=f"{name}_dw_bn")(x)
    return L.ReLU(max_value=6.0 if relu6 else None, name=f"{name}_dw_relu")(x)


def gap_head(x, num_classes: int, pool: str = "mean"):
    # A 1x1 conv instead of Dense: same maths, but LiteRT's reference FULLY_CONNECTED
    # rounds differently from TFLite-Micro's in rare cases (1 LSB), while CONV_2D agrees
    # bit for bit, so host checks can demand exact agreement.
    # pool "avg": an AveragePooling2D over the whole map, the same average, which converts to
    # AVERAGE_POOL_2D instead of MEAN. TFLM's MEAN has no CMSIS-NN kernel: on a Cortex-M4 it
    # took 130 instructions per input element, AVERAGE_POOL_2D 20x fewer (firmware profile).
    if pool == "avg":
        x = L.AveragePooling2D(pool_size=tuple(x.shape[1:3]), name="gap")(x)  # (batch, 1, 1, C)
    else:
        x = L.GlobalAveragePooling2D(keepdims=True, name="gap")(x)  # (batch, 1, 1, C)
    x = L.Conv2D(num_classes, 1, name="logits")(x)
    return L.Flatten(name="flatten")(x)  # (batch, classes) logits


def _five_blocks(input_shape, num_classes: int, widths: tuple[int, ...], name: str) -> keras.Model:
    # Five 3x3 conv-BN-ReLU blocks, stride 2 at the second and fourth, then the GAP head.
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, filters in enumerate(widths):
        x = conv_bn_relu(x, filters, stride=2 if i in (1, 3) else 1, name=f"b{i + 1}")
    return keras.Model(inputs, gap_head(x, num_classes), name=name)


def tiny_cnn(input_shape, num_classes: int) -> keras.Model:
    """Five 3x3 conv-BN-ReLU blocks (16-32-32-48-48, two stride-2), GAP, dense; just under 50k
    params at 10 classes."""
    return _five_blocks(input_shape, num_classes, (16, 32, 32, 48, 48), "tiny_cnn")


def small_cnn(input_shape, num_classes: int) -> keras.Model:
    """tiny_cnn's five blocks at 24-48-48-64-64: just under 100k params, the budget of the
    published 92.5% CNN."""
    return _five_blocks(input_shape, num_classes, (24, 48, 48, 64, 64), "small_cnn")


def fast_cnn(input_shape, num_classes: int) -> keras.Model:
    """small_cnn's widths built for a Cortex-M with CMSIS-NN, at about half its instructions.

    Rules from the per-operator profile (docs/firmware.md) of small_cnn on the Cortex-M4:
    - a 3x3 conv costs 1.8 instructions per MAC, a 1x1 conv 2.3, a 3x3 depthwise 8, and the
      1-channel stem 9.2: the stem stays a plain, narrow 3x3 conv;
    - a separable block (3x3 depthwise + 1x1) pays where the plain 3x3 block's MACs are large,
      at the high-resolution stage (14x14 here: 7.4 M instructions down to 1.7 M), and plain
      3x3 convs stay at the 7x7 stage, where they are cheap and carry most of the capacity;
    - the head pools with AVERAGE_POOL_2D, not MEAN (0.02 M instructions against 0.41 M);
    - a residual shortcut is not free: an int8 ADD takes about 81 instructions per element
      (0.22 M over a 7x7x56 map, as much as 120k MACs of 3x3 conv; hw_student's resC);
    - channel counts are multiples of 8, which CMSIS-NN's kernels handle in whole blocks.
    """
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_relu(inputs, 24, name="b1")
    x = depthwise_bn_relu(x, 2, name="b2")
    x = conv_bn_relu(x, 48, kernel=1, name="b2_pw")
    x = depthwise_bn_relu(x, 1, name="b3")
    x = conv_bn_relu(x, 48, kernel=1, name="b3_pw")
    x = conv_bn_relu(x, 64, stride=2, name="b4")
    x = conv_bn_relu(x, 64, name="b5")
    return keras.Model(inputs, gap_head(x, num_classes, pool="avg"), name="fast_cnn")


def ds_cnn(input_shape, num_classes: int, width: int = 64) -> keras.Model:
    """DS-CNN (MLPerf Tiny keyword-spotting shape): a conv stem, four depthwise-separable blocks."""
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_relu(inputs, width, stride=2, name="stem")
    for i in range(4):
        x = depthwise_bn_relu(x, 1, name=f"ds{i}")
        x = conv_bn_relu(x, width, kernel=1, name=f"ds{i}_pw")
    return keras.Model(inputs, gap_head(x, num_classes), name="ds_cnn")


def resnet8(input_shape, num_classes: int) -> keras.Model:
    """ResNet-8 (MLPerf Tiny image classification): three residual stacks of 16/32/64 filters."""
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_relu(inputs, 16, name="stem")
    for i, (filters, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
        y = conv_bn_relu(x, filters, stride=stride, name=f"s{i}_a")
        y = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"s{i}_b_conv")(y)
        y = _bn(name=f"s{i}_b_bn")(y)
        if stride != 1 or x.shape[-1] != filters:
            x = L.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"s{i}_proj_conv")(x)
            x = _bn(name=f"s{i}_proj_bn")(x)
        x = L.ReLU(name=f"s{i}_relu")(L.Add(name=f"s{i}_add")([x, y]))
    return keras.Model(inputs, gap_head(x, num_classes), name="resnet8")


def mobilenetv2(input_shape, num_classes: int, alpha: float = 0.35) -> keras.Model:
    """A small-input MobileNetV2: inverted residuals with ReLU6, width multiplier `alpha`."""

    def ch(c):
        return max(8, int(c * alpha + 4) // 8 * 8)  # round to multiples of 8, as MobileNetV2 does

    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_relu(inputs, ch(32), name="stem", relu6=True)
    i = 0
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 1)]:
        for j in range(n):
            cin, stride = x.shape[-1], s if j == 0 else 1
            y = (
                conv_bn_relu(x, cin * t, kernel=1, name=f"ir{i}_expand", relu6=True)
                if t != 1
                else x
            )
            y = depthwise_bn_relu(y, stride, name=f"ir{i}", relu6=True)
            y = L.Conv2D(ch(c), 1, use_bias=False, name=f"ir{i}_project")(y)
            y = _bn(name=f"ir{i}_project_bn")(y)
            x = L.Add(name=f"ir{i}_add")([x, y]) if stride == 1 and cin == ch(c) else y
            i += 1
    x = conv_bn_relu(x, max(128, ch(128)), kernel=1, name="top", relu6=True)
    return keras.Model(inputs, gap_head(x, num_classes), name=f"mobilenetv2_{alpha:g}")


STUDENTS: dict[str, Callable[..., keras.Model]] = {
    "tiny_cnn": tiny_cnn,
    "small_cnn": small_cnn,
    "fast_cnn": fast_cnn,
    "ds_cnn": ds_cnn,
    "resnet8": resnet8,
    "mobilenetv2": mobilenetv2,
}


def build_student(name: str, input_shape, num_classes: int, unsafe: bool = False) -> keras.Model:
    """Builds a named student, or loads a user's `.keras` student.

    Raises:
        ModelError: unknown name, unreadable file, or a nested/subclassed model.
    """
    if name in STUDENTS:
        return STUDENTS[name](tuple(input_shape), num_classes)
    if not name.endswith(".keras") and not Path(name).exists():
        raise ModelError(
            f"unknown student {name!r}; use one of {', '.join(STUDENTS)} or a PATH.keras"
        )

    model = load_teacher(name, input_shape, num_classes, unsafe)  # same safe loading and checks
    check_io(model, input_shape, num_classes, what=f"student {name}")
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if (
        nested
        or not isinstance(model, keras.Model)
        or model.__class__.__name__ not in ("Functional", "Model")
    ):
        raise ModelError(
            f"student {name} must be a flat Functional model for QAT; nested models: "
            f"{', '.join(nested) or model.__class__.__name__}"
        )
    return model


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates for one inference: conv, depthwise conv and dense layers."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, L.DepthwiseConv2D):
            _, h, w, c = layer.output_shape
            macs += h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, L.Conv2D):
            _, h, w, c = layer.output_shape
            macs += (
                h
                * w
                * c
                * layer.kernel_size[0]
                * layer.kernel_size[1]
                * layer.input_shape[-1]
                // layer.groups
            )
        elif isinstance(layer, L.Dense):
            macs += int(layer.input_shape[-1]) * layer.units
    return int(macs)


def describe_students(input_shape, num_classes: int = 10) -> list[dict]:
    """Name, parameter count, MACs and a one-line description for each student."""
    rows = []
    for name, fn in STUDENTS.items():
        m = fn(tuple(input_shape), num_classes)
        rows.append(
            {
                "name": name,
                "params": int(m.count_params()),
                "macs": count_macs(m),
                "description": " ".join((fn.__doc__ or "").strip().split("\n\n")[0].split()),
            }
        )
    return rows
