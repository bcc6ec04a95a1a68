"""`python -m kdq_tf.distill [...]` is `kdq_tf distill [...]`."""

import sys


def main(argv: list[str] | None = None) -> int:
    from kdq_tf.cli import main as cli_main

    return cli_main(["distill", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
