"""The Cortex-M7, M33 and M55 boards (QEMU's mps2-an500, mps2-an505, mps3-an547): one small
model each, bit-exact against the Python TFLM interpreter. A file of its own, so that its cold
builds (one TFLM core per board) run beside test_firmware.py's under `pytest -n 2 --dist
loadfile`."""

import re
import subprocess
from pathlib import Path

import pytest
from test_firmware import TFLM, _check_run, int8_firmware, needs_arm, needs_tree  # noqa: F401 (its fixture)

from kdq_tf.device.build import BuildOptions, build
from kdq_tf.device.run import run


@needs_tree
@needs_arm
@pytest.mark.parametrize(
    "target, kernels",
    [("cortex-m7", "reference"), ("cortex-m33", "reference"), ("cortex-m55", "cmsis-nn")],
)
def test_more_cores_under_qemu_are_bit_exact(int8_firmware, target, kernels):  # noqa: F811
    """One small model per new core: the M55 with CMSIS-NN's Helium (MVE) kernels, the M7 and
    M33 with the reference ones (their CMSIS-NN build is the M4's DSP code)."""
    from kdq_tf.device.build import _unsupported

    why = _unsupported(target, False) or _unsupported(target, True)
    if why:
        pytest.skip(why)
    fw_dir, _ = int8_firmware
    build(fw_dir, BuildOptions(target, kernels, str(TFLM)))
    r = run(fw_dir, target, kernels)
    _check_run(fw_dir, r)
    assert r["target"] == target and r["instructions_per_inference"] > 1000
    elf = Path(build(fw_dir, BuildOptions(target, kernels, str(TFLM)))["binary"])
    if target == "cortex-m55":  # Helium instructions are in the image: the MVE kernels ran
        dis = subprocess.run(
            ["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True
        ).stdout
        assert re.search(r"\tv\w+(\.\w+)*\tq[0-7]\b", dis)  # an MVE op on a Q register
