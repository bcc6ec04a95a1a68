"""Distill a CNN teacher into a 50k-parameter student, train it quantization-aware, and run the
int8 model on TensorFlow Lite Micro: the library calls behind `kdq_tf distill --qat` and
`kdq_tf export --int8 --c-array`, one step at a time.

    python examples/distill_fashion_mnist.py              # 12,000 images, a few minutes on 2 cores
    python examples/distill_fashion_mnist.py --limit 600 --epochs 1   # a smoke run

Each step is one library call; change its arguments and run again.
"""

import argparse
import logging
from pathlib import Path

import numpy as np

import kdq_tf
from kdq_tf._keras import keras

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--limit", type=int, default=12000, help="images per split (default 12000)")
p.add_argument("--epochs", type=int, default=3, help="teacher and student epochs (default 3)")
p.add_argument("--out", default="runs/example", help="where the C arrays go")
args = p.parse_args()
logging.basicConfig(level=logging.INFO, format="%(message)s")
keras.utils.set_random_seed(0)

# 1. Data. Fashion-MNIST from Debian's package or the Keras cache; `npz:PATH` or `dir:PATH`
#    read your own. `data.pipeline(split)` is a batched tf.data view of (image, label);
#    10% of the training images are held out for validation.
data = kdq_tf.load_dataset(
    kdq_tf.DataConfig(dataset="fashion_mnist", limit=args.limit, batch_size=64)
)
info = data.info
print(
    f"1. data: {info.n_train} train / {info.n_val} val images, shape {info.input_shape}, "
    f"{info.num_classes} classes"
)


def accuracy(model, split="test") -> float:
    """Top-1 accuracy of a Keras model on a held-out split."""
    x, y = data.split(split)
    logits = model.predict(info.preprocess.apply(x), batch_size=256, verbose=0)  # (N, classes)
    return float((logits.argmax(-1) == y).mean())


# 2. The teacher: any Keras model with logits outputs. Here the toolkit's plain CNN, trained
#    briefly; `kdq_tf.build_teacher` with the default config gives ResNet50 behind an input
#    adapter, and `kdq_tf.load_teacher` reads a .keras file of your own.
teacher = kdq_tf.build_teacher(
    info.input_shape, info.num_classes, kdq_tf.TeacherConfig(arch="cnn", width=32), info.preprocess
)
teacher.compile(
    keras.optimizers.Adam(2e-3),
    keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
teacher.fit(data.pipeline("train", training=True), epochs=args.epochs, verbose=2)
print(f"2. teacher: {teacher.count_params():,} params, test accuracy {accuracy(teacher):.2%}")

# 3. The Distiller: the student learns from the teacher's softened logits (KL at temperature
#    T, scaled by T^2) and from the labels: L = L_soft + lambda * L_hard. The teacher's
#    weights never change.
student = kdq_tf.build_student("tiny_cnn", info.input_shape, info.num_classes)
distiller = kdq_tf.Distiller(student, teacher)
distiller.compile(
    keras.optimizers.Adam(2e-3),
    temperature=2.0,
    loss_weights=kdq_tf.LossWeights.from_config(lam=0.5),
)
distiller.fit(data.pipeline("train", training=True), epochs=args.epochs, verbose=2)
print(f"3. student: {student.count_params():,} params, test accuracy {accuracy(student):.2%}")

# 4. Quantization-aware training with the teacher still guiding: TF-MOT wraps the flat
#    student (never the Distiller) with fake-quant ops for int8 weights and activations.
qat_student = kdq_tf.quantize_student(student)
qat = kdq_tf.Distiller(qat_student, teacher)
qat.compile(keras.optimizers.Adam(1e-4), temperature=2.0)
qat.fit(data.pipeline("train", training=True), epochs=1, verbose=2)
print(f"4. QAT student: test accuracy {accuracy(qat_student):.2%}")

# 5. Convert to a full-int8 .tflite (int8 input and output): bytes, for LiteRT and TFLM.
x_test, y_test = data.split("test")
x_test = info.preprocess.apply(x_test)  # the float inputs the model was trained on
tflite = kdq_tf.to_tflite(qat_student, "int8")
lite = kdq_tf.Runner.from_bytes(tflite)
lite_acc = float((lite.predict_logits(x_test).argmax(-1) == y_test).mean())
print(f"5. int8 .tflite: {len(tflite):,} bytes, LiteRT test accuracy {lite_acc:.2%}")

# 6. C arrays: the model as `const unsigned char g_fmnist_model_data[]` for the firmware.
header, source = kdq_tf.model_data(tflite, "fmnist")
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
(out / "model_data.h").write_text(header)
(out / "model_data.cc").write_text(source)
print(f"6. C arrays: {out / 'model_data.cc'} ({len(source):,} characters)")

# 7. Run on TensorFlow Lite Micro, the interpreter the firmware links: the smallest arena it
#    accepts, then the same int8 inputs through TFLM and LiteRT's reference kernels (LiteRT's
#    optimized kernels may round an LSB differently; the reference ones are TFLM's arithmetic).
arena = kdq_tf.find_arena_size(tflite)
micro = kdq_tf.MicroRunner(tflite, arena)
reference = kdq_tf.Runner.from_bytes(tflite, reference=True)
x_q = lite.quantize(x_test[:50])
same = np.all(micro.run_raw(x_q) == reference.predict_raw(x_q), axis=-1).mean()
print(
    f"7. TFLM: arena {arena:,} bytes; output bytes equal to LiteRT's reference kernels' on "
    f"{same:.0%} of 50 images"
)
