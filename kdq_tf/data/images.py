"""What an image input is, shared by training and the TensorFlow-free runtime: the file types
read, and the scaling the model was trained with. numpy only.
"""

from dataclasses import dataclass

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass(frozen=True)
class Preprocess:
    """x_model = (x_raw * scale - mean) / std, per channel."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalises a raw numpy batch the same way the pipeline does."""
        x = np.asarray(x, np.float32) * np.float32(self.scale)
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
