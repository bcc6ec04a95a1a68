"""The one place that chooses Keras.

TF-MOT 0.8 only supports Keras 2, which ships as the `tf_keras` package for
TF >= 2.16. `TF_USE_LEGACY_KERAS=1` must be set before TensorFlow is imported so
that TF-MOT's own `tf.keras` references resolve to the same tf_keras
(TF-MOT `keras/compat.py` does the same dance). Everything else in kdq_tf does
`from kdq_tf._keras import keras, tf`.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO lines drown the progress bars; warnings still show. The CLI goes
# further (level 3 and kdq_tf._quiet) unless run with -v.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from kdq_tf._quiet import native_stderr_muted  # noqa: E402

with native_stderr_muted():
    import tensorflow as tf
    import tf_keras as keras

    tf.config.list_physical_devices()  # CUDA probing (and its cuInit error) happens here, muted

__all__ = ["keras", "tf"]
