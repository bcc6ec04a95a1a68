"""Inputs for on-device inference: image files, .npy and .npz -> raw (N, H, W, C) arrays. No
TensorFlow.

Raw means pixels as stored in the data set (0..255 for images); the model's
preprocessing (from the metadata embedded at export) is applied afterwards.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdq_tf.data.images import IMAGE_SUFFIXES, Preprocess
from kdq_tf.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelIO:
    """What the runtime needs to feed a model, from its embedded kdq_tf metadata (or defaults)."""

    input_shape: tuple[int, int, int]  # (H, W, C)
    class_names: tuple[str, ...]
    preprocess: Preprocess

    @classmethod
    def from_model(cls, meta: dict | None, input_details: dict, num_outputs: int) -> "ModelIO":
        h, w, c = (int(d) for d in input_details["shape"][1:4])
        if not meta:
            log.warning(
                "the model has no kdq_tf metadata; "
                "assuming inputs scaled by 1/255 and numbered classes"
            )
            return cls(
                (h, w, c),
                tuple(str(i) for i in range(num_outputs)),
                Preprocess(1 / 255, (0.0,) * c, (1.0,) * c),
            )
        p = meta["preprocess"]
        return cls(
            (h, w, c),
            tuple(meta["class_names"]),
            Preprocess(float(p["scale"]), tuple(p["mean"]), tuple(p["std"])),
        )


def _resize(img, size: tuple[int, int], what: str):
    from PIL import Image

    if img.size != size:
        log.warning(
            "%s is %dx%d; resizing to the model's %dx%d", what, img.size[0], img.size[1], *size
        )
        img = img.resize(size, Image.BILINEAR)
    return img


def load_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """One image file -> (H, W, C) uint8, converted to the model's channels and size."""
    from PIL import Image, UnidentifiedImageError

    h, w, c = shape
    try:
        with Image.open(path) as im:
            im = _resize(im.convert("L" if c == 1 else "RGB"), (w, h), str(path))
            a = np.asarray(im, np.uint8)
    except (UnidentifiedImageError, OSError):
        raise DataError(f"{path} is not a readable image (PNG/JPEG/BMP/GIF)") from None
    return a[..., None] if c == 1 else a


def fit_array(a: np.ndarray, shape: tuple[int, int, int], what: str) -> np.ndarray:
    """(H, W), (H, W, C), (N, H, W) or (N, H, W, C) -> (N, H, W, C) with the model's size."""
    h, w, c = shape
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise DataError(
            f"{what} holds {a.dtype} values, not numbers; give raw pixels (uint8 or float)"
        )
    if a.ndim == 2:  # one grey image
        a = a[None, ..., None]
    elif a.ndim == 3:  # one image with channels last, or a batch of grey images
        a = a[None] if a.shape[-1] == c and (c == 3 or a.shape[-1] == 1) else a[..., None]
    if a.ndim != 4 or a.shape[-1] != c:
        raise DataError(f"{what} has shape {a.shape}; expected (N, {h}, {w}, {c}) or (N, {h}, {w})")
    if a.shape[1:3] != (h, w):
        from PIL import Image

        log.warning(
            "%s is %dx%d; resizing to the model's %dx%d", what, a.shape[2], a.shape[1], w, h
        )
        a = np.stack(
            [
                np.asarray(
                    Image.fromarray(np.squeeze(x).astype(np.float32)).resize((w, h), Image.BILINEAR)
                )
                for x in a
            ]
        ).reshape(len(a), h, w, c)
    return a


def load_inputs(paths: list[str], shape: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    """Reads image files, .npy and .npz (key "x") into one raw batch, with a label per sample.

    Raises:
        DataError: a missing file, an unreadable image, an npz without "x", or a bad shape.
    """
    batches, names = [], []
    for s in paths:
        p = Path(s)
        if not p.is_file():
            raise DataError(f"input file {p} does not exist")
        suffix = p.suffix.lower()
        if suffix == ".npy":
            a = fit_array(_load_np(p), shape, str(p))
        elif suffix == ".npz":
            try:
                with np.load(p, allow_pickle=False) as f:
                    if "x" not in f.files:
                        raise DataError(
                            f"{p} has no array named x (it has {', '.join(f.files) or 'none'}); "
                            "save inputs with np.savez(path, x=batch)"
                        )
                    a = fit_array(f["x"], shape, f"{p}[x]")
            except (OSError, ValueError) as e:
                raise DataError(f"{p} is not a readable .npz file ({e})") from None
        else:
            a = load_image(p, shape)[None]
            if suffix not in IMAGE_SUFFIXES:
                log.info("%s has no image suffix but decoded as an image", p)
        batches.append(a)
        names += [str(p)] if len(a) == 1 else [f"{p}[{i}]" for i in range(len(a))]
    return np.concatenate([b.astype(np.float32) for b in batches]), names


def _load_np(p: Path) -> np.ndarray:
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{p} is not a readable .npy file ({e})") from None
