"""Writes a TFLite-Micro firmware project: the firmware_export/ template plus generated files."""

import string
from pathlib import Path

from kdq_tf import files
from kdq_tf.carray import c_identifier

# The repo's firmware_export/ (export runs from a source checkout or an editable install).
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "firmware_export"
TEMPLATE_FILES = ("main.cc", "Makefile", "CMakeLists.txt", "README.md")


def render_template(name: str) -> dict[str, str]:
    """The template files with `${name}` replaced by the C identifier."""
    ident = c_identifier(name)
    src = TEMPLATE_DIR
    return {f: string.Template((src / f).read_text()).safe_substitute(name=ident) for f in TEMPLATE_FILES}


def write_firmware(out_dir: str | Path, name: str, generated: dict[str, str]) -> list[Path]:
    """Writes template + generated files (atomically each) into `out_dir`; returns the paths."""
    out = Path(out_dir)
    return [files.write_text(out / fname, text) for fname, text in {**render_template(name), **generated}.items()]
