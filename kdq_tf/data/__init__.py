"""Data: readers without TensorFlow (`readers`, `images`), tf.data pipelines (`dataset`),
augmentation."""
