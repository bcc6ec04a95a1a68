"""A TensorFlow-free TFLite runner for hosts and devices.

Imports the interpreter from LiteRT (`ai_edge_litert`), else `tflite_runtime`,
else `tensorflow.lite`: only the first two exist on a device with the runtime extra.
"""

import logging
from pathlib import Path

import numpy as np

from kdq_tf._quiet import native_stderr_muted
from kdq_tf.errors import ModelError

log = logging.getLogger(__name__)


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter

        return interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter

        return interpreter
    except ImportError:
        pass
    try:
        from tensorflow.lite.python import interpreter

        return interpreter
    except ImportError:
        raise ModelError(
            "no TFLite interpreter found; pip install ai-edge-litert "
            "(or tflite-runtime, or tensorflow)"
        ) from None


def load_interpreter(model_content: bytes, threads: int | None = None, reference: bool = False):
    """An allocated interpreter for `model_content`; ModelError if the bytes are not a TFLite model.

    `reference=True` uses the builtin reference kernels (no XNNPACK), the same
    arithmetic as TFLite-Micro, so the two agree bit for bit.
    """
    if len(model_content) < 8 or model_content[4:8] != b"TFL3":
        raise ModelError("not a TFLite flatbuffer (missing the TFL3 identifier)")
    mod = _interpreter_module()
    kwargs = {"experimental_op_resolver_type": mod.OpResolverType.BUILTIN_REF} if reference else {}
    try:
        with native_stderr_muted():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
            interp = mod.Interpreter(model_content=model_content, num_threads=threads, **kwargs)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"TFLite model could not be loaded ({str(e).splitlines()[0]})") from None
    return interp


class Runner:
    """Runs a TFLite model on float inputs; quantizes and dequantizes per tensor.

    Use `Runner.from_file(path)` or `Runner.from_bytes(data)`.
    """

    def __init__(self, model_content: bytes, threads: int | None = None, reference: bool = False):
        self.model_content = bytes(model_content)
        self.threads = threads
        self.interpreter = load_interpreter(self.model_content, threads, reference)
        self._batch = int(self.input_details["shape"][0])

    @classmethod
    def from_bytes(
        cls, data: bytes, threads: int | None = None, reference: bool = False
    ) -> "Runner":
        return cls(data, threads, reference)

    @classmethod
    def from_file(
        cls, path: str | Path, threads: int | None = None, reference: bool = False
    ) -> "Runner":
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"model file {p} does not exist")
        return cls(p.read_bytes(), threads, reference)

    @property
    def input_details(self) -> dict:
        return self.interpreter.get_input_details()[0]

    @property
    def output_details(self) -> dict:
        return self.interpreter.get_output_details()[0]

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = list(self.input_details["shape"])
            shape[0] = batch
            self.interpreter.resize_tensor_input(self.input_details["index"], shape)
            self.interpreter.allocate_tensors()
            self._batch = batch

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float input -> the input tensor's dtype, with its own scale and zero point."""
        d = self.input_details
        dtype = np.dtype(d["dtype"])
        if dtype.kind == "f":
            return np.asarray(x, dtype)
        scale, zero = d["quantization"]
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        d = self.output_details
        if np.dtype(d["dtype"]).kind == "f":
            return np.asarray(y, np.float32)
        scale, zero = d["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def predict_raw(self, x_q: np.ndarray) -> np.ndarray:
        """Runs one already-typed batch and returns the raw output tensor."""
        self._resize(len(x_q))
        self.interpreter.set_tensor(self.input_details["index"], x_q)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_details["index"]).copy()

    def predict_logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Float inputs (N, H, W, C) -> dequantized outputs (N, classes)."""
        outs = [
            self.dequantize(self.predict_raw(self.quantize(x[i : i + batch_size])))
            for i in range(0, len(x), batch_size)
        ]
        return (
            np.concatenate(outs)
            if outs
            else np.zeros((0,) + tuple(self.output_details["shape"][1:]))
        )

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities: softmax of the dequantized logits."""
        z = self.predict_logits(x, batch_size)
        z = z - z.max(-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(-1, keepdims=True)


def benchmark(
    runner: "Runner", runs: int = 200, warmup: int = 20, other: "Runner | None" = None
) -> dict:
    """Batch-1 latency in milliseconds: min, median, p90 over `runs` timed invokes after warm-up.

    With `other`, the two models run alternately in this process (same machine state
    for both), and the median ratio runner/other is reported.
    """
    import time

    def one(r: Runner, x: np.ndarray) -> float:
        t0 = time.perf_counter()
        r.interpreter.set_tensor(r.input_details["index"], x)
        r.interpreter.invoke()
        return (time.perf_counter() - t0) * 1e3

    runners = [runner] + ([other] if other else [])
    inputs = []
    for r in runners:
        r._resize(1)
        d = r.input_details
        inputs.append(np.zeros(d["shape"], d["dtype"]))
    for _ in range(warmup):
        for r, x in zip(runners, inputs):
            one(r, x)
    times = [[] for _ in runners]
    for _ in range(runs):
        for i, (r, x) in enumerate(zip(runners, inputs)):
            times[i].append(one(r, x))

    def stats(t, r):
        a = np.asarray(t)
        return {
            "runs": runs,
            "min_ms": float(a.min()),
            "median_ms": float(np.median(a)),
            "p90_ms": float(np.percentile(a, 90)),
            "input_dtype": np.dtype(r.input_details["dtype"]).name,
            "output_dtype": np.dtype(r.output_details["dtype"]).name,
            "threads": r.threads if r.threads else "default",
            "samples_ms": [round(float(v), 4) for v in a],
        }

    out = {"model": stats(times[0], runner)}
    if other:
        out["other"] = stats(times[1], other)
        out["median_ratio"] = out["model"]["median_ms"] / out["other"]["median_ms"]
    return out
