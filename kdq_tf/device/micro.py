"""TFLite-Micro host checks: run a model on the TFLM interpreter, find the smallest arena.

Known trap: the tflite-micro interpreter segfaults (instead of raising) when the
arena is far too small, so every probe of an unknown size runs in a child process.
"""

import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from kdq_tf.errors import KdqError

log = logging.getLogger(__name__)

_PROBE = r"""
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
data = open(sys.argv[1], "rb").read()
interp = runtime.Interpreter.from_bytes(data, arena_size=int(sys.argv[2]))
d = interp.get_input_details(0)
interp.set_input(np.zeros(d["shape"], d["dtype"]), 0)
interp.invoke()
"""


def _runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise KdqError(
            "the TFLite-Micro interpreter is not installed; pip install tflite-micro"
        ) from None
    return runtime


def arena_fits(model_path: str | Path, arena_size: int, timeout: float = 60) -> bool:
    """True if TFLM allocates and invokes the model with this arena (checked in a child process)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(model_path), str(int(arena_size))],
        capture_output=True,
        timeout=timeout,
    )
    return proc.returncode == 0


def find_arena_size(model: bytes, granularity: int = 16, upper: int = 64 << 20) -> int:
    """The smallest tensor arena (a multiple of `granularity`) TFLM accepts for `model`.

    Doubles from 4 KiB until a size works, then bisects down.

    Raises:
        KdqError: no size up to `upper` works (the model may need ops TFLM lacks).
    """
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.tflite"
        path.write_bytes(model)
        hi = 4096
        while not arena_fits(path, hi):
            if hi >= upper:
                raise KdqError(
                    f"TFLite-Micro could not run the model with arenas up to {upper} bytes"
                )
            hi *= 2
        lo = hi // 2 if hi > 4096 else 0  # lo: known (or assumed) to fail
        while hi - lo > granularity:
            mid = (lo + hi) // 2 // granularity * granularity
            if mid <= lo:
                break
            if arena_fits(path, mid):
                hi = mid
            else:
                lo = mid
        return hi


class MicroRunner:
    """Batch-1 inference on the TFLite-Micro interpreter, with an arena known to fit."""

    def __init__(self, model: bytes, arena_size: int):
        self.interp = _runtime().Interpreter.from_bytes(bytes(model), arena_size=int(arena_size))
        self.input = self.interp.get_input_details(0)
        self.output = self.interp.get_output_details(0)

    def run_raw(self, x_q: np.ndarray) -> np.ndarray:
        """Already-quantized inputs (N, ...) -> raw outputs (N, ...), one invoke per sample."""
        outs = []
        for sample in x_q:
            self.interp.set_input(sample[None].astype(self.input["dtype"]), 0)
            self.interp.invoke()
            outs.append(np.array(self.interp.get_output(0))[0])
        return np.stack(outs)
