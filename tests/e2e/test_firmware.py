"""Firmware built against the TFLM tree and run on the host and a Cortex-M4 (QEMU), checked
byte for byte against the `tflite_micro` Python interpreter on the same inputs."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdq_tf import cli
from kdq_tf._keras import keras
from kdq_tf.deploy import flatbuf
from kdq_tf.deploy.convert import to_tflite
from kdq_tf.deploy.export import firmware_project
from kdq_tf.device.build import BuildOptions, build
from kdq_tf.device.micro import MicroRunner
from kdq_tf.device.report import record
from kdq_tf.device.run import run

# The tree comes from TFLM_DIR, as for a user (`make test` passes the project's test tree).
TFLM = Path(os.environ.get("TFLM_DIR") or "/nonexistent")
needs_tree = pytest.mark.skipif(
    not (TFLM / "tensorflow/lite/micro/micro_interpreter.cc").is_file(),
    reason="no TFLite-Micro tree: set TFLM_DIR (docs/firmware.md)",
)
needs_host = pytest.mark.skipif(
    shutil.which("g++") is None or shutil.which("make") is None, reason="g++ and make not installed"
)
needs_arm = pytest.mark.skipif(
    shutil.which("arm-none-eabi-g++") is None or shutil.which("qemu-system-arm") is None,
    reason="apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
    "libstdc++-arm-none-eabi-newlib qemu-system-arm",
)


def _tiny_model():
    """The student's op set (CONV_2D, MEAN): a small conv net on 12x12 images, 3 classes."""
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.layers.Input((12, 12, 1)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.Conv2D(3, 1),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    x = np.random.default_rng(0).normal(size=(64, 12, 12, 1)).astype(np.float32)
    return m, x


@pytest.fixture(scope="module")
def int8_firmware(tmp_path_factory):
    m, x = _tiny_model()
    model = to_tflite(m, "int8", x[:32])
    out = tmp_path_factory.mktemp("fw") / "firmware"
    info = firmware_project(
        model, out, "tiny", ["a", "b", "c"], x[32:], np.arange(32) % 3, samples=6
    )
    return out, info


def _check_run(fw_dir: Path, r: dict):
    blob = np.load(fw_dir / "test_samples.npz")
    check = fw_dir / "model_check.tflite"  # the interpreter cannot run the fused LUT model
    model = check if check.is_file() else fw_dir / "model_device.tflite"
    want = MicroRunner(model.read_bytes(), max(r["arena_chosen_bytes"], 64 * 1024)).run_raw(
        blob["x_q"]
    )
    assert r["samples"] == len(want) == 6
    assert r["bit_exact"] == 6, r
    assert r["predicted"] == [int(v) for v in want.argmax(1)]
    assert 0 < r["arena_used_bytes"] <= r["arena_chosen_bytes"]
    mem = r["memory"]
    assert mem["flash_model_bytes"] == len((fw_dir / "model_device.tflite").read_bytes())
    assert mem["ram_arena_bytes"] == r["arena_chosen_bytes"]
    assert (
        mem["flash_bytes"] > mem["flash_model_bytes"] and mem["ram_bytes"] >= mem["ram_arena_bytes"]
    )


@needs_tree
@needs_host
def test_host_build_is_bit_exact_with_python_tflm(int8_firmware):
    fw_dir, _ = int8_firmware
    b = build(fw_dir, BuildOptions("host", "reference", str(TFLM)))
    assert Path(b["binary"]).is_file()
    r = run(fw_dir, "host")
    _check_run(fw_dir, r)
    md = record(fw_dir, r)
    assert "host/reference" in md and (fw_dir / "device_report.json").is_file()


@needs_tree
@needs_arm
def test_cortex_m4_cmsis_nn_under_qemu_is_bit_exact(int8_firmware):
    fw_dir, _ = int8_firmware
    assert (
        cli.main(
            [
                "firmware",
                "build",
                str(fw_dir),
                "--target",
                "cortex-m4",
                "--kernels",
                "cmsis-nn",
                "--tflm",
                str(TFLM),
            ]
        )
        == 0
    )
    r = run(fw_dir, "cortex-m4")  # the latest Cortex-M4 build: CMSIS-NN
    assert r["kernels"] == "cmsis-nn"
    _check_run(fw_dir, r)
    assert r["instructions_per_inference"] > 1000
    m = r[
        "memory"
    ]  # the linker map's shares add up to the loaded flash sections, within 1%: the map
    loaded = (
        m["flash_bytes"] - m["sections"][".data"]
    )  # lists string sections before the linker merges them
    assert (
        abs(m["flash_tflm_bytes"] + m["flash_runtime_bytes"] + m["flash_app_bytes"] - loaded)
        < 0.01 * loaded
    )
    assert (
        m["flash_app_bytes"] >= m["flash_model_bytes"] + m["flash_test_images_bytes"]
        and m["flash_tflm_bytes"] > 0
    )


@needs_tree
@needs_arm
def test_cortex_m4_profile_adds_up_to_the_inference(int8_firmware, capsys):
    """Per-operator instructions from the PROFILE=1 image: the model's operators in order, MACs
    by hand, and the operators within 2% of the whole inference, measured in the same run."""
    fw_dir, _ = int8_firmware
    args = ["firmware", "profile", str(fw_dir), "--tflm", str(TFLM), "--json"]
    assert cli.main(args) == 0
    prof = json.loads(capsys.readouterr().out)
    assert (prof["target"], prof["kernels"]) == ("cortex-m4", "cmsis-nn")
    assert prof["bit_exact"] == prof["samples"] == 6
    rows = prof["operators"]
    assert [r["op"] for r in rows] == flatbuf.operator_sequence(
        (fw_dir / "model_device.tflite").read_bytes()
    )
    # 12x12x1 -> 3x3 stride 2 valid -> 5x5x8: 9 products per output; then 1x1 8 -> 3.
    assert [r["macs"] for r in rows if r["op"] == "CONV_2D"] == [5 * 5 * 8 * 9, 5 * 5 * 3 * 8]
    assert all(r["instructions"] > 0 for r in rows)
    assert abs(prof["operators_share"] - 1) <= 0.02, prof["operators_share"]
    for name in ("profile.json", "profile.md", "profile.png"):
        assert (fw_dir / name).stat().st_size > 0
    assert (fw_dir / "profile.png").read_bytes()[:4] == b"\x89PNG"
    # the profile image has its own build folder: the plain build's stays as it was
    assert (fw_dir / "build" / "cortex-m4-cmsis-nn-profile").is_dir()


def test_profile_on_the_host_exits_2_with_one_line(int8_firmware, capsys):
    fw_dir, _ = int8_firmware
    before = sorted(p.name for p in fw_dir.iterdir())
    assert cli.main(["firmware", "profile", str(fw_dir), "--target", "host"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--target cortex-m4" in err
    assert sorted(p.name for p in fw_dir.iterdir()) == before


@needs_tree
@needs_host
def test_int16x8_runs_bit_exact_on_tflm(tmp_path):
    m, x = _tiny_model()
    model = to_tflite(m, "int16x8", x[:32])
    info = firmware_project(
        model, tmp_path / "fw", "tiny16", ["a", "b", "c"], x[32:], np.arange(32) % 3, samples=6
    )
    assert info["mode"] == "int16x8"
    assert "using InputType = int16_t;" in (tmp_path / "fw" / "model_settings.h").read_text()
    build(tmp_path / "fw", BuildOptions("host", "reference", str(TFLM)))
    _check_run(tmp_path / "fw", run(tmp_path / "fw", "host"))


def test_device_flatbuffer_drops_metadata_and_stays_bit_exact():
    m, x = _tiny_model()
    full = flatbuf.embed_metadata(to_tflite(m, "int8", x[:32]), {"class_names": ["a", "b", "c"]})
    dev = flatbuf.strip_for_device(full)
    assert len(dev) < len(full)
    assert flatbuf.read_metadata(full) is not None and flatbuf.read_metadata(dev) is None
    assert all(t["name"] == "" for t in flatbuf.describe(dev)["tensors"])
    # per-channel scales stay; the zero points (all 0 for weights and biases) become one value
    tensors = [
        (a, b)
        for a, b in zip(
            flatbuf._model(full).subgraphs[0].tensors, flatbuf._model(dev).subgraphs[0].tensors
        )
        if a.quantization is not None
        and a.quantization.scale is not None
        and len(a.quantization.scale) > 1
    ]
    assert tensors
    for a, b in tensors:
        np.testing.assert_array_equal(a.quantization.scale, b.quantization.scale)
        assert set(a.quantization.zeroPoint) == {0} and list(b.quantization.zeroPoint) == [0]
    x_q = np.random.default_rng(1).integers(-128, 128, (20, 12, 12, 1), dtype=np.int8)
    np.testing.assert_array_equal(
        MicroRunner(dev, 16384).run_raw(x_q), MicroRunner(full, 16384).run_raw(x_q)
    )


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kdq_tf: error:"), err
    return err[0]


def test_missing_tree_exits_2_with_one_line(int8_firmware, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("TFLM_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no user config either
    fw_dir, _ = int8_firmware
    assert cli.main(["firmware", "build", str(fw_dir), "--tflm", str(tmp_path / "nope")]) == 2
    assert "does not exist" in _one_error(capsys)
    assert cli.main(["firmware", "build", str(fw_dir)]) == 2
    line = _one_error(capsys)
    assert "--tflm" in line and "TFLM_DIR" in line and "docs/firmware.md" in line
    (tmp_path / "empty").mkdir()
    assert cli.main(["firmware", "build", str(fw_dir), "--tflm", str(tmp_path / "empty")]) == 2
    assert "micro_interpreter.cc is missing" in _one_error(capsys)


@needs_host
def test_missing_toolchain_and_qemu_exit_2_with_the_packages(
    int8_firmware, capsys, tmp_path, monkeypatch
):
    fw_dir = tmp_path / "fw"
    shutil.copytree(
        int8_firmware[0], fw_dir, ignore=shutil.ignore_patterns("build", "device_report.*")
    )
    before = sorted(p.name for p in fw_dir.rglob("*"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "make").symlink_to(shutil.which("make"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # make, but no Arm compiler and no QEMU
    assert (
        cli.main(["firmware", "build", str(fw_dir), "--target", "cortex-m4", "--tflm", str(TFLM)])
        == 2
    )
    line = _one_error(capsys)
    assert "arm-none-eabi-g++ not found" in line and "apt-get install gcc-arm-none-eabi" in line
    assert sorted(p.name for p in fw_dir.rglob("*")) == before  # nothing written
    assert cli.main(["firmware", "run", str(fw_dir), "--target", "cortex-m4"]) == 2
    assert "no cortex-m4 build" in _one_error(capsys)
    elf = (
        fw_dir / "build" / "cortex-m4-reference" / "tiny_fw.elf"
    )  # a build, as far as run can tell
    elf.parent.mkdir(parents=True, exist_ok=True)
    elf.touch()
    (fw_dir / "build" / "cortex-m4.last").write_text("reference")
    assert cli.main(["firmware", "run", str(fw_dir), "--target", "cortex-m4"]) == 2
    assert "qemu-system-arm not found" in _one_error(capsys)
    assert cli.main(["firmware", "run", str(tmp_path / "bin"), "--target", "host"]) == 2
    assert "not a kdq_tf firmware folder" in _one_error(capsys)


@needs_tree
@needs_host
def test_lut_compressed_firmware_is_bit_exact_with_the_uncompressed_model(tmp_path):
    from kdq_tf.deploy.compression import compress_lut

    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.layers.Input((12, 12, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(3, 1),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    layer = m.layers[1]  # 8 -> 32 channels, 2,304 weights: 16 clusters by hand
    k, b = layer.get_weights()
    c = np.linspace(k.min(), k.max(), 16)
    layer.set_weights([c[np.abs(k[..., None] - c).argmin(-1)], b])
    x = np.random.default_rng(0).normal(size=(38, 12, 12, 1)).astype(np.float32)
    model = to_tflite(m, "int8", x[:32])
    small, plan = compress_lut(flatbuf.strip_for_device(model))
    assert [p["bits"] for p in plan if p["compress"]] == [4]
    fw = tmp_path / "fw"
    info = firmware_project(  # TFLM's DECODE operator before the convolution, not fused
        model,
        fw,
        "lut",
        ["a", "b", "c"],
        x[32:],
        np.arange(6) % 3,
        samples=6,
        device_bytes=small,
        fuse_lut=False,
    )
    assert "CUSTOM:TFLM_DECODE" in info["ops"] and not (fw / "model_check.tflite").exists()
    assert "decode" not in (fw / "tflm_sources.mk").read_text()  # TFLM's DECODE is not built
    assert 'AddCustom("TFLM_DECODE", kdq::Register_DECODE())' in (fw / "model_ops.h").read_text()
    opts = BuildOptions(
        "host", "reference", str(TFLM)
    )  # the objects the other host builds use, plus DECODE
    build(fw, opts)
    r = run(fw, "host")
    _check_run(fw, r)  # the firmware against the Python interpreter on the compressed model
    samples = np.load(fw / "test_samples.npz")["x_q"]
    arena = r["arena_chosen_bytes"]  # and that interpreter agrees with the uncompressed model
    plain = MicroRunner(flatbuf.strip_for_device(model), arena).run_raw(samples)
    np.testing.assert_array_equal(MicroRunner(small, arena).run_raw(samples), plain)


def _clustered(layer, n):
    """Each output channel's kernel snapped to n values (the per-channel tables' case)."""
    k, *rest = layer.get_weights()
    axis = -2 if isinstance(layer, keras.layers.DepthwiseConv2D) else -1
    moved = np.moveaxis(k, axis, 0)
    for c in range(moved.shape[0]):
        v = np.linspace(moved[c].min(), moved[c].max(), n)
        moved[c] = v[np.abs(moved[c][..., None] - v).argmin(-1)]
    layer.set_weights([np.moveaxis(moved, 0, axis), *rest])


@needs_tree
@needs_host
def test_kdq_decoder_is_bit_exact_on_every_layout(tmp_path):
    """The firmware's own LUT kernels against the Python interpreter (TFLM's DECODE): index widths
    that straddle bytes (3 and 5 bits), a depthwise kernel (tables on the last axis, kept as
    DECODE), and convolutions fused with their decoder (kdq_lut_conv.cc), computed in groups of
    output channels, one of them with channels that start mid-byte (63 x 3 bits each); on the
    host and, where the toolchain is, the Cortex-M4 with CMSIS-NN."""
    from kdq_tf.deploy.compression import compress_lut
    from kdq_tf.device.fuse import fuse_lut_convs

    keras.utils.set_random_seed(1)
    m = keras.Sequential(
        [
            keras.layers.Input((12, 12, 2)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.DepthwiseConv2D(5, activation="relu"),  # 800 weights
            keras.layers.Conv2D(32, 3, activation="relu"),  # 9,216 weights
            keras.layers.Conv2D(7, 1, activation="relu"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),  # 64 x 63 weights
            keras.layers.Conv2D(3, 1),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    _clustered(m.layers[1], 6)  # 6 values per channel: 3-bit indices, last-axis tables
    _clustered(m.layers[2], 20)  # 20: 5-bit indices, first-axis tables
    _clustered(m.layers[4], 6)  # 3-bit, 189 bits per output channel
    x = np.random.default_rng(1).normal(size=(38, 12, 12, 2)).astype(np.float32)
    model = to_tflite(m, "int8", x[:32])
    small, plan = compress_lut(flatbuf.strip_for_device(model))
    assert sorted(p["bits"] for p in plan if p["compress"]) == [3, 3, 5]
    fused = fuse_lut_convs(small)[1]
    assert len(fused) == 2 and all(f["group"] < f["cout"] for f in fused)  # in groups
    fw = tmp_path / "fw"
    info = firmware_project(
        model, fw, "lut", ["a", "b", "c"], x[32:], np.arange(6) % 3, samples=6, device_bytes=small
    )
    assert "CUSTOM:KDQ_LUT_CONV" in info["ops"] and "CUSTOM:TFLM_DECODE" in info["ops"]
    assert (
        flatbuf.operator_sequence((fw / "model_device.tflite").read_bytes()).count(
            "CUSTOM:KDQ_LUT_CONV"
        )
        == 2
    )
    assert (fw / "model_check.tflite").read_bytes() == small  # what the interpreter runs
    build(fw, BuildOptions("host", "reference", str(TFLM)))
    _check_run(fw, run(fw, "host"))
    if shutil.which("arm-none-eabi-g++") and shutil.which("qemu-system-arm"):
        build(fw, BuildOptions("cortex-m4", "cmsis-nn", str(TFLM)))
        r = run(fw, "cortex-m4", "cmsis-nn")
        _check_run(fw, r)
        # the decoder and the fused convolution's glue are the app's kdq_*.o: far under TFLM's
        # 21 KB DECODE kernel
        assert 0 < r["memory"]["flash_decode_bytes"] < 6144
