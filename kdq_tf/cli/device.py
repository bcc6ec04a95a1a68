"""Command line, device side: `export` and `firmware build|run|profile`. Thin: one library call
each."""

import argparse
import json
from pathlib import Path

from kdq_tf.device.build import BuildOptions, build
from kdq_tf.device.report import record
from kdq_tf.device.run import run
from kdq_tf.device.targets import TARGETS


def cmd_export(args) -> int:
    from kdq_tf.deploy.export import run_export

    overrides = {k: v for k, v in vars(args).items() if k.startswith("export.")}
    report = run_export(args.run, args.out, args.firmware, overrides, args.set)
    out = args.out or f"{args.run}/export"
    print((Path(out) / "report.md").read_text())
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def _options(args):
    return BuildOptions(
        target=args.target, kernels=args.kernels or "reference", tflm=args.tflm, jobs=args.jobs
    )


def cmd_firmware_build(args) -> int:
    r = build(args.dir, _options(args))
    print(
        f"built {r['binary']} ({r['target']}, {r['kernels']} kernels) in {r['build_time_s']} s: "
        f"{r['tflm_objects_compiled']} TFLM objects compiled, "
        f"{r['tflm_objects_in_cache']} in {r['object_cache']}"
    )
    return 0


def cmd_firmware_run(args) -> int:
    if args.build:
        build(args.dir, _options(args))
    r = run(args.dir, args.target, args.kernels)
    md = record(args.dir, r)
    print(json.dumps(r, indent=2) if args.json else md)  # --json: stdout is one JSON document
    return 0 if r["bit_exact"] == r["samples"] else 1


def cmd_firmware_profile(args) -> int:
    from kdq_tf.device.profile import profile, write

    prof = profile(args.dir, args.target, args.kernels or "cmsis-nn", args.tflm, args.jobs)
    md = write(args.dir, prof)
    print(json.dumps(prof, indent=2) if args.json else md)
    return 0 if prof["bit_exact"] == prof["samples"] else 1


def add_parsers(sub) -> None:
    e = sub.add_parser("export", help="int8 .tflite, C arrays, TFLite-Micro firmware, host checks")
    e.add_argument("--run", required=True, help="run directory of kdq_tf distill")
    e.add_argument("--out", help="export folder (default RUN/export)")
    mode = e.add_mutually_exclusive_group()
    for m in ("int8", "int16x8", "float16", "float32"):
        mode.add_argument(f"--{m}", dest="export.mode", action="store_const", const=m)
    e.add_argument(
        "--c-array",
        dest="export.c_array",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write model_data.cc/.h, model_settings.h, model_ops.h, sample_input.h",
    )
    e.add_argument(
        "--compress",
        dest="export.compress",
        choices=["none", "lut"],
        help="lut: TFLite-Micro LUT compression of clustered weight tensors for the device model",
    )
    e.add_argument(
        "--fuse-lut",
        dest="export.fuse_lut",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --compress lut: fuse each DECODE -> CONV_2D pair into one operator, about "
        "the dense model's RAM (default); --no-fuse-lut keeps TFLM's DECODE: fewer "
        "instructions, more RAM",
    )
    e.add_argument("--firmware", metavar="DIR", help="write a TFLite-Micro firmware project here")
    e.add_argument(
        "--firmware-samples",
        dest="export.firmware_samples",
        type=int,
        help="test images embedded in the firmware for the on-target check (default 10)",
    )
    e.add_argument("--name", dest="export.name", help="C name: g_<name>_model_data (default model)")
    e.add_argument("--calib-samples", dest="export.calib_samples", type=int)
    e.add_argument("--verify-samples", dest="export.verify_samples", type=int)
    e.add_argument("--set", action="append", default=[])
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export)

    fw = sub.add_parser(
        "firmware", help="build and run an exported firmware on the host or a Cortex-M core (QEMU)"
    )
    fsub = fw.add_subparsers(dest="firmware_command", required=True)
    for name, func, text in (
        ("build", cmd_firmware_build, "compile against a TFLite-Micro tree"),
        (
            "run",
            cmd_firmware_run,
            "run the image; compare its output bytes with the "
            "Python TFLM interpreter's; measure flash, RAM, arena, instructions",
        ),
        (
            "profile",
            cmd_firmware_profile,
            "build and run a profiling image: instructions, MACs and arena bytes per operator; "
            "writes profile.json/.md/.png",
        ),
    ):
        p = fsub.add_parser(name, help=text)
        p.add_argument("dir", help="the folder export --firmware wrote")
        p.add_argument(
            "--target",
            choices=list(TARGETS),
            default="cortex-m4" if name == "profile" else "host",
            help="; ".join(f"{t.name}: {t.about}" for t in TARGETS.values())
            + (" (default cortex-m4; a profile needs a Cortex-M)" if name == "profile" else "")
            + (" (default host)" if name != "profile" else ""),
        )
        p.add_argument(
            "--kernels",
            choices=["reference", "cmsis-nn"],
            help="TFLM kernel set (build: default reference; run: the latest build for the target; "
            "profile: default cmsis-nn)",
        )
        p.add_argument(
            "--tflm", metavar="TFLM_DIR", help="TFLite-Micro source tree (default $TFLM_DIR)"
        )
        p.add_argument(
            "-j", "--jobs", type=int, help="parallel compile jobs (default: the CPU count)"
        )
        if name == "run":
            p.add_argument(
                "--build", action="store_true", help="build first (needs --tflm or $TFLM_DIR)"
            )
        if name in ("run", "profile"):
            p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
