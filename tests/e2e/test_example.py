"""The narrative example runs end to end on a small slice of Fashion-MNIST."""

import os
import re
import subprocess
import sys

from conftest import ROOT


def test_example_runs_every_step(tmp_path):
    out = tmp_path / "c"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "distill_fashion_mnist.py"),
            "--limit",
            "300",
            "--epochs",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [int(m) for m in re.findall(r"^(\d)\. ", proc.stdout, re.M)]
    assert steps == [1, 2, 3, 4, 5, 6, 7], proc.stdout
    size = int(re.search(r"int8 \.tflite: ([\d,]+) bytes", proc.stdout).group(1).replace(",", ""))
    assert f"g_fmnist_model_data_size = {size};" in (out / "model_data.h").read_text()
    assert (out / "model_data.cc").read_text().count("0x") == size  # one literal per model byte
    assert "equal to LiteRT's reference kernels' on 100% of 50 images" in proc.stdout, proc.stdout
