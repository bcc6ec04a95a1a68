"""Readers for the named data sets and user files: bytes/paths in, numpy arrays out.

No TensorFlow here, so the readers are cheap to import and test. `data.py` turns
the arrays into tf.data pipelines.
"""

import gzip
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdq_tf.data.images import IMAGE_SUFFIXES
from kdq_tf.errors import DataError

log = logging.getLogger(__name__)

NAMED = ("fashion_mnist", "mnist", "cifar10", "cifar100")

CLASS_NAMES = {
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "mnist": tuple(str(i) for i in range(10)),
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
}
# Folder names: in the Keras cache, and under Debian's /usr/share/datasets.
_KERAS_DIRS = {
    "fashion_mnist": "fashion-mnist",
    "mnist": "mnist",
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
}
_DEBIAN_DIRS = {
    "fashion_mnist": "fashion-mnist",
    "mnist": "mnist",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
}
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class RawData:
    """Train and test arrays as stored: x is (N, H, W, C), y is (N,) int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str  # where the data was read from, for the user


def read_idx(data: bytes, what: str = "idx data") -> np.ndarray:
    """Parses the IDX format of (Fashion-)MNIST: magic 0x0000, dtype code, ndim, big-endian dims.

    Args:
        data: the raw (uncompressed) bytes.
        what: a name for error messages.

    Returns:
        The array, in native byte order.

    Raises:
        DataError: if the header is malformed or the payload length is wrong.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{what} is not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{what}: unsupported IDX dtype code 0x{code:02x} or ndim {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{what} is truncated inside its header")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{what}: header says {dims} ({expected} bytes) but {len(data) - header} bytes follow"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _read_maybe_gz(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (
        stem + ".gz",
        stem,
        stem.replace("-idx", ".idx") + ".gz",
        stem.replace("-idx", ".idx"),
    ):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_idx_folder(folder: Path) -> tuple[np.ndarray, ...] | None:
    paths = [_find_idx(folder, s) for s in _IDX_FILES]
    if any(p is None for p in paths):
        return None
    arrays = [read_idx(_read_maybe_gz(p), str(p)) for p in paths]
    return arrays[0], arrays[1], arrays[2], arrays[3]


def _load_cifar_folder(
    folder: Path, name: str
) -> tuple[tuple[np.ndarray, ...], tuple[str, ...]] | None:
    # The python pickles Keras caches (the "python version" of the CIFAR archives).
    if name == "cifar10":
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_file, meta_file, label_key, names_key = (
            folder / "test_batch",
            folder / "batches.meta",
            b"labels",
            b"label_names",
        )
    else:
        train_files = [folder / "train"]
        test_file, meta_file, label_key, names_key = (
            folder / "test",
            folder / "meta",
            b"fine_labels",
            b"fine_label_names",
        )
    if not all(p.is_file() for p in [*train_files, test_file]):
        return None

    def load(p: Path) -> dict:
        with open(p, "rb") as f:
            return pickle.load(f, encoding="bytes")

    def arrays(batches: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([np.asarray(b[b"data"], np.uint8) for b in batches])
        y = np.concatenate([np.asarray(b[label_key], np.int64) for b in batches])
        return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y  # stored CHW, we use HWC

    x_tr, y_tr = arrays([load(p) for p in train_files])
    x_te, y_te = arrays([load(test_file)])
    names: tuple[str, ...] = CLASS_NAMES.get(name, ())
    if meta_file.is_file():
        names = tuple(n.decode() for n in load(meta_file)[names_key])
    return (x_tr, y_tr, x_te, y_te), names or tuple(f"class_{i}" for i in range(100))


def _load_named_folder(
    name: str, folder: Path
) -> tuple[tuple[np.ndarray, ...], tuple[str, ...]] | None:
    if not folder.is_dir():
        return None
    if name in ("fashion_mnist", "mnist"):
        npz = folder / "mnist.npz"  # Keras caches MNIST as one npz
        if name == "mnist" and npz.is_file():
            with np.load(npz) as f:
                return (f["x_train"], f["y_train"], f["x_test"], f["y_test"]), CLASS_NAMES[name]
        arrays = _load_idx_folder(folder)
        return (arrays, CLASS_NAMES[name]) if arrays else None
    return _load_cifar_folder(folder, name)


def keras_cache_dir() -> Path:
    """The folder Keras downloads data sets into (`$KERAS_HOME/datasets`, else
    ~/.keras/datasets)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def candidate_dirs(name: str, data_dir: str | None) -> list[Path]:
    """Where a named set is looked for, in order: --data-dir, Keras cache, Debian's package."""
    dirs = []
    if data_dir:
        dirs += [
            Path(data_dir),
            Path(data_dir) / _KERAS_DIRS[name],
            Path(data_dir) / _DEBIAN_DIRS[name],
        ]
    cache = keras_cache_dir()
    dirs += [cache / _KERAS_DIRS[name], cache]  # mnist.npz sits directly in the cache
    dirs.append(Path("/usr/share/datasets") / _DEBIAN_DIRS[name])
    return list(dict.fromkeys(dirs))


def _keras_download(name: str) -> tuple[np.ndarray, ...]:
    from kdq_tf._keras import keras  # heavy; only when nothing local was found

    loader = {
        "fashion_mnist": keras.datasets.fashion_mnist,
        "mnist": keras.datasets.mnist,
        "cifar10": keras.datasets.cifar10,
        "cifar100": keras.datasets.cifar100,
    }[name]
    (x_tr, y_tr), (x_te, y_te) = loader.load_data()
    return x_tr, y_tr, x_te, y_te


def load_named(name: str, data_dir: str | None = None, download: bool = True) -> RawData:
    """Loads a named set from the first place that has it, else downloads it with Keras.

    Args:
        name: one of `NAMED`.
        data_dir: a folder searched first. Defaults to None.
        download: try a Keras download when no local copy exists. Defaults to True.

    Returns:
        A `RawData` whose `source` says where the data came from.

    Raises:
        DataError: if the name is unknown, or no copy exists and the download fails;
            the message lists the places searched and how to get the data.
    """
    if name not in NAMED:
        raise DataError(
            f"unknown data set {name!r}; use one of {', '.join(NAMED)}, npz:PATH or dir:PATH"
        )
    searched = candidate_dirs(name, data_dir)
    if data_dir and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir} does not exist or is not a folder")
    for folder in searched:
        found = _load_named_folder(name, folder)
        if found:
            (x_tr, y_tr, x_te, y_te), names = found
            return _raw(x_tr, y_tr, x_te, y_te, names, str(folder))
    if download:
        log.info("%s not found locally; downloading with Keras", name)
        try:
            x_tr, y_tr, x_te, y_te = _keras_download(name)
        except Exception as e:  # any network or archive failure
            hint = "apt-get install dataset-fashion-mnist, or " if name == "fashion_mnist" else ""
            raise DataError(
                f"data set {name!r} not found in {', '.join(map(str, searched))} "
                f"and the Keras download failed ({type(e).__name__}); "
                f"{hint}put the files in one of those folders or pass --data-dir"
            ) from None
        return _raw(
            x_tr,
            y_tr,
            x_te,
            y_te,
            CLASS_NAMES.get(name) or tuple(f"class_{i}" for i in range(100)),
            f"keras download -> {keras_cache_dir()}",
        )
    raise DataError(f"data set {name!r} not found in {', '.join(map(str, searched))}")


def _raw(x_tr, y_tr, x_te, y_te, names, source) -> RawData:
    def img(x):
        x = np.asarray(x)
        return x[..., None] if x.ndim == 3 else x

    def lab(y):
        return np.asarray(y).reshape(-1)

    return RawData(img(x_tr), lab(y_tr), img(x_te), lab(y_te), tuple(str(n) for n in names), source)


def load_npz(path: str) -> RawData:
    """Reads an npz with x_train, y_train, x_test, y_test and optional class_names."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"npz file {p} does not exist")
    required = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(p, allow_pickle=False) as f:
            missing = [k for k in required if k not in f.files]
            if missing:
                raise DataError(
                    f"{p} lacks {', '.join(missing)}; it has {', '.join(f.files) or 'no arrays'}; "
                    f"an npz data set needs {', '.join(required)} (and optionally class_names)"
                )
            arrays = {k: f[k] for k in required}
            for k, arr in arrays.items():
                if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                    raise DataError(
                        f"{p}: {k} holds {arr.dtype} values, not numbers; an npz data set "
                        "needs pixel arrays in x_* and integer class ids (0..K-1) in y_*, "
                        "with the names in class_names"
                    )
            names = [str(n) for n in f["class_names"]] if "class_names" in f.files else None
    except DataError:
        raise
    except (
        Exception
    ) as e:  # empty, truncated or not-zip files fail in many ways inside numpy/zipfile
        raise DataError(f"{p} is not a readable .npz file ({type(e).__name__}: {e})") from None
    for split in ("train", "test"):
        nx, ny = len(arrays[f"x_{split}"]), len(np.asarray(arrays[f"y_{split}"]).reshape(-1))
        if nx != ny:
            raise DataError(
                f"{p}: x_{split} has {nx} samples but y_{split} has {ny}; they must match"
            )
    if names is None:
        y_all = np.concatenate(
            [np.asarray(arrays["y_train"]).reshape(-1), np.asarray(arrays["y_test"]).reshape(-1)]
        )
        finite = y_all.size and np.all(np.isfinite(y_all.astype(np.float64)))
        names = [f"class_{i}" for i in range(max(int(np.max(y_all)) + 1, 2) if finite else 0)]
    return _raw(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], names, str(p)
    )


def _read_image(path: Path, gray: bool, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if gray else "RGB")
            if size and im.size != size:
                im = im.resize(size, Image.BILINEAR)
            a = np.asarray(im, np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path} is not a readable image ({e})") from None
    return a[..., None] if gray else a


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_image_tree(root: Path, names: list[str], size: tuple[int, int] | None, gray: bool):
    xs, ys = [], []
    for label, name in enumerate(names):
        folder = root / name
        files = (
            sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if folder.is_dir()
            else []
        )
        for f in files:
            xs.append(_read_image(f, gray, size))
            ys.append(label)
    if not xs:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return np.stack(xs), np.asarray(ys, np.int64)


def load_image_dir(path: str, test_fraction: float = 0.2, seed: int = 0) -> RawData:
    """Reads an image folder: `root/<class>/*.png`, or `root/train/<class>` + `root/test/<class>`.

    Without train/test subfolders a seeded `test_fraction` of each class is held out.
    All images are resized to the size of the most common one (with a warning).
    """
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    base = root / "train" if split else root
    names = [p.name for p in _class_folders(base)]
    if len(names) < 2:
        raise DataError(f"{base} needs one subfolder per class (at least 2); found {len(names)}")
    files = [f for n in names for f in (base / n).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {base}")
    sizes, modes = [], set()
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
                modes.add(im.mode)
        except OSError as e:
            raise DataError(f"{f} is not a readable image ({e})") from None
    values, counts = np.unique(np.asarray(sizes), axis=0, return_counts=True)
    size = tuple(int(v) for v in values[np.argmax(counts)])
    if len(values) > 1:
        log.warning(
            "images in %s have %d different sizes; resizing all to %dx%d", root, len(values), *size
        )
    gray = modes <= {"L", "1", "I", "I;16"}
    x, y = _read_image_tree(base, names, size, gray)
    if split:
        x_te, y_te = _read_image_tree(root / "test", names, size, gray)
    else:
        order = np.random.default_rng(seed).permutation(len(x))
        n_test = max(1, int(round(len(x) * test_fraction)))
        test_idx, train_idx = order[:n_test], order[n_test:]
        x, y, x_te, y_te = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    return RawData(x, y, x_te, y_te, tuple(names), str(root))


def load_raw(dataset: str, data_dir: str | None = None, seed: int = 0) -> RawData:
    """Dispatches `name`, `npz:PATH` or `dir:PATH` to its reader."""
    if dataset.startswith("npz:"):
        return load_npz(dataset[4:])
    if dataset.startswith("dir:"):
        return load_image_dir(dataset[4:], seed=seed)
    return load_named(dataset, data_dir)


def validate(raw: RawData) -> None:
    """Checks shapes, sizes, finiteness and label ranges; raises DataError naming the problem."""
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        if x.ndim != 4:
            raise DataError(
                f"{raw.source}: x_{split} must be (N, H, W) or (N, H, W, C), got shape {x.shape}"
            )
        if len(x) == 0:
            raise DataError(f"{raw.source}: x_{split} is empty")
        if len(x) != len(y):
            raise DataError(
                f"{raw.source}: x_{split} has {len(x)} samples but y_{split} has {len(y)}"
            )
        h, w, c = x.shape[1:]
        if h < 8 or w < 8:
            raise DataError(f"{raw.source}: images are {h}x{w}; at least 8x8 is needed")
        if c not in (1, 3):
            raise DataError(f"{raw.source}: images must have 1 or 3 channels, got {c}")
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            raise DataError(f"{raw.source}: x_{split} contains NaN or Inf")
    if raw.x_train.shape[1:] != raw.x_test.shape[1:]:
        raise DataError(
            f"{raw.source}: train images are {raw.x_train.shape[1:]} but test images are "
            f"{raw.x_test.shape[1:]}"
        )
    k = len(raw.class_names)
    if k < 2:
        raise DataError(f"{raw.source}: need at least 2 classes, got {k}")
    for split, y in (("train", raw.y_train), ("test", raw.y_test)):
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise DataError(
                    f"{raw.source}: y_{split} must hold integer class ids, got dtype {y.dtype}"
                )
        if y.min() < 0 or y.max() >= k:
            raise DataError(
                f"{raw.source}: y_{split} has labels in [{int(y.min())}, {int(y.max())}] "
                f"but there are {k} classes (labels must be 0..{k - 1})"
            )
    # Data a classifier cannot learn from: one class, or one image repeated.
    present = np.unique(raw.y_train)
    if len(present) < 2:
        raise DataError(
            f"{raw.source}: y_train holds only class {int(present[0])}; a classifier needs "
            "examples of at least two classes"
        )
    if raw.x_train.min() == raw.x_train.max():
        raise DataError(
            f"{raw.source}: every training pixel is {raw.x_train.flat[0]}; the images carry "
            "nothing to learn from"
        )
