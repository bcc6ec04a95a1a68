"""Arguments that several command groups share."""

import argparse


def dataset_only(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        default="fashion_mnist",
        help="fashion_mnist (default), mnist, cifar10, cifar100, npz:PATH or dir:PATH",
    )
    p.add_argument("--data-dir", help="folder searched first for named data sets")
