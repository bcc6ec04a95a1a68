"""Command line: argparse subcommands; each handler builds a Config and makes one call.

`train.py` holds the training side (data, teacher, distill, students, qat), `device.py` export
and firmware, `runtime.py` the commands on a `.tflite`; this module builds the parser and
turns errors into one line and exit code 2. Only this package prints.
"""

import argparse
import logging
import os
import sys
import warnings

from kdq_tf.cli.device import add_parsers as add_device_parsers
from kdq_tf.cli.runtime import add_parsers as add_runtime_parsers
from kdq_tf.cli.search import add_parsers as add_search_parsers
from kdq_tf.cli.train import add_parsers as add_train_parsers
from kdq_tf.errors import KdqError

log = logging.getLogger("kdq_tf")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdq_tf",
        description="Distill a ResNet50 teacher into a small student, train it quantization-"
        "aware and export full-int8 TFLite for microcontrollers.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show TensorFlow's and LiteRT's native log lines",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    add_train_parsers(sub)
    add_device_parsers(sub)
    add_runtime_parsers(sub)
    add_search_parsers(sub)
    _tidy_metavars(parser)
    return parser


def _tidy_metavars(parser: argparse.ArgumentParser) -> None:
    # Flags store into "section.key" dests; show "--out OUT", not "--out RUN.OUT".
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _tidy_metavars(sub)
        elif (
            "." in action.dest
            and action.metavar is None
            and action.nargs != 0
            and not action.choices
        ):
            action.metavar = action.dest.rsplit(".", 1)[1].upper()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:  # before TensorFlow is imported; the user's own level wins
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # TensorFlow's Python logger: retracing notices, "Sharding callback duration", compiled-
        # metrics notes. kdq_tf's own lines say what runs; -v shows TensorFlow's too.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(
            logging.WARNING
        )  # checkpoint "Sharding callback duration"
        # TF-MOT models are saved as HDF5 on purpose (its layers need quantize_scope).
        warnings.filterwarnings("ignore", message=".*saving your model as an HDF5 file.*")
        # The converter's note on a QAT model whose input quantizer holds the statistics.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.quiet else "%(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except KdqError as e:
        print(f"kdq_tf: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        if e.name and e.name.split(".")[0] in (
            "tensorflow",
            "tf_keras",
            "tensorflow_model_optimization",
        ):
            print(
                f"kdq_tf: error: '{args.command}' needs TensorFlow ({e.name} is missing); "
                "pip install 'kdq_tf[train]'",
                file=sys.stderr,
            )
            return 2
        raise
    except KeyboardInterrupt:
        print(
            "kdq_tf: interrupted; rerun with --resume to continue from the last finished epoch",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
