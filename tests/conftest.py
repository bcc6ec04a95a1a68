import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]


def idx_bytes(a: np.ndarray) -> bytes:
    """Hand-made IDX: two zero bytes, dtype 0x08 (ubyte), ndim, big-endian dims, payload."""
    return (
        bytes([0, 0, 0x08, a.ndim])
        + b"".join(struct.pack(">I", d) for d in a.shape)
        + a.astype(np.uint8).tobytes()
    )


def write_idx_set(folder: Path, n_train=40, n_test=20, size=28, classes=10, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "y_train": rng.integers(0, classes, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "y_test": rng.integers(0, classes, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    names = {
        "x_train": "train-images-idx3-ubyte",
        "y_train": "train-labels-idx1-ubyte",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }
    for k, stem in names.items():
        (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(arrays[k])))
    return arrays


def separable_npz(
    path: Path, n_train=300, n_test=100, size=12, classes=3, channels=1, seed=0, **extra
) -> Path:
    """Images whose class is a bright quadrant: learnable in a few steps."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, classes, n)
        x = rng.integers(0, 60, (n, size, size, channels)).astype(np.uint8)
        h = size // 2
        for i, c in enumerate(y):
            r, col = divmod(int(c), 2)
            x[i, r * h : (r + 1) * h, col * h : (col + 1) * h] += 150
        return x, y

    x_tr, y_tr = make(n_train)
    x_te, y_te = make(n_test)
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, **extra)
    return path


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    return separable_npz(tmp_path / "tiny.npz")


def run_cli(*args, env=None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    e = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "kdq_tf", *map(str, args)],
        capture_output=True,
        text=True,
        env=e,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one kdq_tf error line; asserts there is no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("kdq_tf: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]
