"""A user's install: the wheel, installed non-editable into fresh venvs, used from a folder
outside the checkout.

1. Build the wheel and check it carries the firmware template (package data).
2. Train side: a fresh venv with the wheel. Its dependencies (TensorFlow, TF-MOT, ...) come
   from the test's own environment through a .pth line, so the test does not download 1 GB;
   kdq_tf itself must come from the wheel, not from the checkout. A tiny run, export with
   --firmware, then build and run the host firmware.
The runtime-only install (the base dependencies, no TensorFlow, installed by pip from a wheel
build of the checkout) classifies, evaluates and benchmarks in
tests/e2e/test_runtime_cli.py::test_fresh_runtime_venv.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, separable_npz

pytestmark = pytest.mark.slow
TFLM = os.environ.get("TFLM_DIR")


def _sh(*args, cwd, env=None, timeout=900) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**e, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A copy of the sources without build/ or *.egg-info of an editable install.
    src = out / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", "benchmarks", "tests"
        ),
    )
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src, cwd=out)
    (whl,) = out.glob("kdq_tf-*.whl")
    return whl


def _venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    return path / "bin"


def test_wheel_carries_the_firmware_template(wheel):
    """Every file export writes from the template (the sources, the Makefile, each board's linker
    script and the startup) is in the wheel."""
    from kdq_tf.device.project import TEMPLATE_FILES

    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"main.cc", "kdq_decode.cc", "cortex_m/startup.c", "cortex_m/mps3_an547.ld"} <= set(
        TEMPLATE_FILES
    )
    for f in TEMPLATE_FILES:
        assert f"kdq_tf/device/template/{f}" in names, f


def test_train_export_and_host_firmware_from_the_wheel(wheel, tmp_path):
    from kdq_tf._keras import keras

    # 1. A fresh venv: kdq_tf from the wheel, its dependencies from this environment.
    bin_ = _venv(tmp_path / "venv")
    _sh(bin_ / "pip", "install", "-q", "--no-deps", wheel, cwd=tmp_path)
    purelib = _sh(
        bin_ / "python",
        "-c",
        "import sysconfig; print(sysconfig.get_path('purelib'))",
        cwd=tmp_path,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    where = _sh(bin_ / "python", "-c", "import kdq_tf; print(kdq_tf.__file__)", cwd=tmp_path).stdout
    assert where.startswith(purelib), where  # the wheel's copy, not the checkout

    # 2. Outside the checkout: a tiny teacher, distill + QAT, export with firmware.
    work = tmp_path / "work"
    work.mkdir()
    npz = separable_npz(work / "tiny.npz")
    keras.utils.set_random_seed(0)
    keras.Sequential(
        [keras.layers.Input((12, 12, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    ).save(work / "teacher.keras")
    kdq = bin_ / "kdq_tf"
    _sh(
        kdq,
        "distill",
        "--dataset",
        f"npz:{npz}",
        "--teacher",
        "teacher.keras",
        "--epochs",
        "1",
        "--qat",
        "--qat-epochs",
        "1",
        "--out",
        "run",
        cwd=work,
    )
    _sh(kdq, "export", "--run", "run", "--int8", "--c-array", "--firmware", "fw", cwd=work)
    assert (work / "fw" / "main.cc").is_file() and (work / "fw" / "model_data.cc").is_file()

    # 3. The host firmware, compared byte for byte with the TFLM Python interpreter by `run`.
    if not (TFLM and shutil.which("g++") and shutil.which("make")):
        pytest.skip("host firmware: set TFLM_DIR and install g++ and make")
    res = json.loads(
        _sh(kdq, "firmware", "run", "fw", "--build", "--target", "host", "--json", cwd=work).stdout
    )
    assert res["bit_exact"] == res["samples"] > 0
