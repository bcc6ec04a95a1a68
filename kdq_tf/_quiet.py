"""Quiet native start-up logs: TensorFlow's and LiteRT's C++ lines that bypass Python logging.

TensorFlow writes lines such as `E0000 ... failed call to cuInit` (on every machine
without a GPU) and oneDNN notices to file descriptor 2 before its log level is read.
`kdq_tf` sets TF_CPP_MIN_LOG_LEVEL=3 unless the user runs with -v or set it himself; at
level 3 the native stderr is muted while TensorFlow starts and LiteRT builds an
interpreter. Failures still surface as Python exceptions, which carry their own message.
"""

import contextlib
import os
import sys


def muting() -> bool:
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3"


@contextlib.contextmanager
def native_stderr_muted():
    """Sends fd 2 to the null device inside the block, when `muting()`."""
    if not muting():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
