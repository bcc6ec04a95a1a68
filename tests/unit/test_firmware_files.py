"""Firmware sources and parsers against independent truth: gcc-compiled bytes, hand-written
output."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kdq_tf.device import carray, tflm_tree
from kdq_tf.device.project import render_template
from kdq_tf.device.run import arena_advice, map_shares, parse_output
from kdq_tf.errors import KdqError


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
def test_test_samples_header_compiles_to_the_numpy_bytes(tmp_path, dtype):
    info = np.iinfo(dtype)
    x = np.random.default_rng(0).integers(info.min, info.max + 1, (3, 5, 7, 1)).astype(dtype)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = info.min, info.max  # the extremes print as valid C literals
    (tmp_path / "test_samples.h").write_text(carray.test_samples("m", x, np.array([2, 0, 1])))
    (tmp_path / "t.cc").write_text(r"""
#include <cstdio>
#include "test_samples.h"
int main() {
  FILE* f = fopen("out.bin", "wb");
  fwrite(g_m_test_inputs, 1, sizeof(g_m_test_inputs), f);
  fclose(f);
  printf("%d %d %d %d", kNumTestSamples, g_m_test_labels[0], g_m_test_labels[1],
         g_m_test_labels[2]);
}
""")
    subprocess.run(
        ["g++", "-std=c++17", "-Wall", "-Werror", "-o", "t", "t.cc"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(["./t"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    assert out == "3 2 0 1"
    assert (tmp_path / "out.bin").read_bytes() == x.tobytes()  # host is little-endian, like the M4


def test_model_settings_carries_the_tensor_types():
    s = carray.model_settings(
        "m",
        carray.TensorSpec((1, 4, 4, 1), "int16", 0.5, 0),
        carray.TensorSpec((1, 3), "int16", 0.25, 0),
        ["a", "b", "c"],
        1000,
    )
    assert "using InputType = int16_t;" in s and "using OutputType = int16_t;" in s
    assert "constexpr int kOutputSize = 3;" in s
    with pytest.raises(KdqError, match="no C type"):
        carray.c_type("complex64")


def test_parse_output_reads_samples_and_facts():
    text = (
        "board says hello\n"
        "kdq: model m samples 2 arena 4096\n"
        "kdq: sample 0 label 3 class 1 Ankle boot out -128 5 127\n"
        "kdq: sample 1 label 1 class 1 Ankle boot out 0 -1 2\n"
        "kdq: arena_used 3000\nkdq: ticks 12345\nkdq: correct 1/2\n"
    )
    got = parse_output(text)
    assert [s["out"] for s in got["samples"]] == [[-128, 5, 127], [0, -1, 2]]
    assert got["samples"][0]["class_name"] == "Ankle boot" and got["samples"][0]["label"] == 3
    assert got["arena_used"] == 3000 and got["ticks"] == 12345 and "error" not in got
    assert parse_output("kdq: error AllocateTensors failed\n")["error"] == "AllocateTensors failed"


def test_kernel_files_follow_tflm_names():
    assert tflm_tree.kernel_files(
        [
            "CONV_2D",
            "MEAN",
            "RESHAPE",
            "DEPTHWISE_CONV_2D",
            "AVERAGE_POOL_2D",
            "MAX_POOL_2D",
            "FULLY_CONNECTED",
            "SOFTMAX",
        ]
    ) == ["conv", "reduce", "reshape", "depthwise_conv", "pooling", "fully_connected", "softmax"]
    assert "KDQ_KERNELS := conv reduce" in tflm_tree.sources_mk(["CONV_2D", "MEAN"])
    with pytest.raises(KdqError, match="CUSTOM:MyOp"):
        tflm_tree.kernel_files(["CUSTOM:MyOp"])


def _write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_tree_identity_follows_the_sources_bytes_not_their_timestamps(tmp_path):
    tree = tmp_path / "tflm"
    header = _write(tree / "tensorflow/lite/micro/a.h", "#define A 1\n")
    _write(tree / "tensorflow/lite/micro/a.cc", "int a;\n")
    _write(tree / "MANIFEST.txt", "tflite-micro abc\n")
    a = tflm_tree.tree_identity(tree)
    for p in tree.rglob("*"):  # laid out again: same bytes, new timestamps
        os.utime(p, (p.stat().st_atime + 3600, p.stat().st_mtime + 3600))
    _write(tree / "MANIFEST.txt", "tflite-micro def\n")  # not compiled: no new objects
    _write(tree / ".git/hooks/x.h", "#x\n")  # a hidden folder: not what a build reads
    assert tflm_tree.tree_identity(tree) == a
    header.write_text("#define A 2\n")  # a header the Makefile's rules do not track
    assert tflm_tree.tree_identity(tree) != a
    header.write_text("#define A 1\n")
    assert tflm_tree.tree_identity(tree) == a
    shutil.copytree(tree, tmp_path / "other")  # __FILE__ differs: objects are not shared
    assert tflm_tree.tree_identity(tmp_path / "other") != a


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_a_keyed_cache_reuses_objects_older_than_their_sources(tmp_path):
    """The firmware Makefile asked what it would do (make -n), on a tree of empty sources whose
    timestamps are newer than the cached objects: with TFLM_CACHE_KEYED=1 (kdq_tf firmware build)
    it compiles only the application; without it, every TFLM source again."""
    fw, tree, cache = tmp_path / "fw", tmp_path / "tflm", tmp_path / "cache"
    for name, text in render_template("m").items():
        _write(fw / name, text)
    _write(fw / "model_data.cc")  # export's part of the application
    _write(fw / "tflm_sources.mk", tflm_tree.sources_mk(["CONV_2D"]))
    t, k = "tensorflow/lite", "tensorflow/lite/micro/kernels"
    sources = [
        f"{t}/micro/micro_interpreter.cc",
        f"{t}/kernels/internal/reference/portable_tensor_utils.cc",
        f"{t}/kernels/kernel_util.cc",
        "tensorflow/compiler/mlir/lite/core/api/error_reporter.cc",
        "tensorflow/compiler/mlir/lite/schema/schema_utils.cc",
        f"{k}/kernel_util.cc",
        f"{k}/micro_tensor_utils.cc",
        f"{k}/conv.cc",
    ]
    for s in sources:
        _write(tree / s)
        old = _write(cache / f"{s}.o").stat().st_mtime - 3600
        os.utime(cache / f"{s}.o", (old, old))

    def dry_run(*extra):
        return subprocess.run(
            ["make", "-n", "-C", str(fw), f"TFLM_DIR={tree}", f"TFLM_OBJDIR={cache}", *extra],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    keyed = dry_run("TFLM_CACHE_KEYED=1")
    assert "-c main.cc" in keyed and f"-c {tree}/" not in keyed  # links the cached objects
    assert all(f"{cache}/{s}.o" in keyed for s in sources)
    plain = dry_run()
    assert all(f"-c {tree}/{s} -o {cache}/{s}.o" in plain for s in sources)
    (cache / f"{sources[0]}.o").unlink()  # a missing object is compiled either way
    keyed = dry_run("TFLM_CACHE_KEYED=1")
    assert keyed.count(f"-c {tree}/") == 1 and f"-c {tree}/{sources[0]} " in keyed


def test_map_shares_sum_by_origin(tmp_path):
    cache = "/c/tflm-objects/x"
    (tmp_path / "fw.map").write_text(f"""Discarded input sections
 .text.unused   0x00000000       0x99 {cache}/a.cc.o
Linker script and memory map

.text           0x00000000     0x1000
 .text.main     0x00000010       0x20 build/app/main.cc.o
 .text._ZN6tflite15VeryLongNameThatWraps
                0x00000030      0x100 {cache}/tensorflow/lite/micro/micro_interpreter.cc.o
 .text          0x00000130       0x40 /usr/lib/arm-none-eabi/lib/libc.a(lib_a-memcpy.o)
                0x00000130                memcpy
 .rodata        0x00000170      0x200 build/app/model_data.cc.o
 .text          0x00000370      0x300 {cache}/tensorflow/lite/micro/kernels/decode_state_lut.cc.o
.data           0x20000000       0x10
 .data          0x20000000        0x8 {cache}/x.cc.o
 .data          0x20000008        0x8 /usr/lib/libc.a(lib_a-impure.o)
.bss            0x20000010     0x1000
 .bss           0x20000010      0x800 build/app/main.cc.o
.debug_info     0x00000000     0x5000
 .debug_info    0x00000000     0x5000 {cache}/tensorflow/lite/micro/micro_interpreter.cc.o
""")
    got = map_shares(tmp_path / "fw.map", Path(cache))
    # DECODE (LUT) is part of TFLM's share and also counted on its own.
    assert got["flash"] == {
        "tflm": 0x100 + 0x300,
        "app": 0x20 + 0x200,
        "runtime": 0x40,
        "decode": 0x300,
    }
    assert got["ram"] == {"tflm": 8, "app": 0x800, "runtime": 8, "decode": 0}


def _tree(root: Path) -> Path:
    for f in tflm_tree.REQUIRED:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("")
    return root


def test_tree_lookup_order_is_flag_env_user_config(tmp_path, monkeypatch):
    # 1. Nothing names a tree: no default folder, and the error says where one comes from.
    monkeypatch.delenv("TFLM_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert tflm_tree.find_tree(None) is None
    with pytest.raises(KdqError, match="docs/firmware.md"):
        tflm_tree.check_tree(None)
    # 2. The user config names one.
    a, b, c = (_tree(tmp_path / n) for n in "abc")
    cfg = tmp_path / "cfg" / "kdq_tf" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'tflm = "{a}"\n')
    assert tflm_tree.check_tree(None) == a.resolve()
    assert tflm_tree.find_tree(None) == (str(a), str(cfg))
    # 3. TFLM_DIR beats the config; --tflm beats both.
    monkeypatch.setenv("TFLM_DIR", str(b))
    assert tflm_tree.check_tree(None) == b.resolve()
    assert tflm_tree.check_tree(str(c)) == c.resolve()


def test_bad_user_config_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("TFLM_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    cfg = tmp_path / "kdq_tf" / "config.toml"
    cfg.parent.mkdir()
    cfg.write_text("tflm = [1]\n")
    with pytest.raises(KdqError, match="tflm must be a folder name"):
        tflm_tree.check_tree(None)
    cfg.write_text("tflm = \n")
    with pytest.raises(KdqError, match="not valid TOML"):
        tflm_tree.check_tree(None)
    cfg.write_text(f'tflm = "{tmp_path / "gone"}"\n')
    with pytest.raises(KdqError, match=f"from {cfg}.* does not exist"):
        tflm_tree.check_tree(None)


def test_makefile_and_target_table_agree():
    """The firmware Makefile (the build without Python) and kdq_tf.device.targets (run, flags)
    name the same boards and compiler flags for every Cortex-M target."""
    import re

    from kdq_tf.device.project import TEMPLATE_DIR, TEMPLATE_FILES
    from kdq_tf.device.targets import CORTEX_M, TARGETS

    make = (TEMPLATE_DIR / "Makefile").read_text()
    blocks = re.findall(
        r"ifeq \(\$\(TARGET\),(cortex-m\d+)\)\n(?:\s*#.*\n)*"
        r"\s*ARCH_FLAGS := (.*)\n\s*BOARD := (\S+)",
        make,
    )
    assert [b[0] for b in blocks] == list(CORTEX_M)
    for name, flags, board in blocks:
        t = TARGETS[name]
        assert (flags.strip(), board) == (t.cpu_flags, t.board)
        assert t.machine == board.replace("_", "-")
        assert f"cortex_m/{board}.ld" in TEMPLATE_FILES


def test_arena_advice_reads_how_many_bytes_tflm_missed():
    text = (
        "kdq: error AllocateTensors failed: raise kTensorArenaSize in model_settings.h\n"
        "Failed to resize buffer. Requested: 17552, available 15608, missing: 1944\n"
    )
    assert arena_advice(text, 17504) == " (TFLM is 1,944 B short: at least 19,448)"
    assert arena_advice("kdq: error something else\n", 17504) == ""
