"""The training side of the command line: data info, teacher, distill, students, qat."""

import argparse
import json

from kdq_tf.config import config_from_dict, load_config
from kdq_tf.data import readers as datasets
from kdq_tf.errors import KdqError
from kdq_tf.files import read_json, write_json
from kdq_tf.report import markdown_table, results_table


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run and data")
    g.add_argument(
        "--config",
        help="TOML or JSON file with [run], [data], [teacher], [distill], [qat], [export]",
    )
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any config key (repeatable); applied last",
    )
    g.add_argument("--out", dest="run.out", help="run directory (default runs/latest)")
    g.add_argument("--seed", dest="run.seed", type=int)
    g.add_argument(
        "--resume",
        dest="run.resume",
        action="store_true",
        default=None,
        help="continue a killed run from its last finished epoch",
    )
    g.add_argument(
        "--overwrite",
        dest="run.overwrite",
        action="store_true",
        default=None,
        help="replace the results of an earlier run in --out",
    )
    g.add_argument(
        "--strategy",
        dest="run.strategy",
        choices=["default", "mirrored", "multiworker"],
        help="tf.distribute strategy; multiworker reads TF_CONFIG",
    )
    g.add_argument(
        "--cpu-devices",
        dest="run.cpu_devices",
        type=int,
        help="with --strategy mirrored: split the CPU into N logical devices (testing)",
    )
    _data_args(g)
    g.add_argument(
        "--views",
        dest="distill.views",
        type=int,
        metavar="K",
        help="cache the teacher's logits for K fixed augmented views of every training image",
    )


def _data_args(g) -> None:
    g.add_argument(
        "--dataset",
        dest="data.dataset",
        help="fashion_mnist (default), mnist, cifar10, cifar100, npz:PATH or dir:PATH",
    )
    g.add_argument(
        "--data-dir", dest="data.data_dir", help="folder searched first for named data sets"
    )
    g.add_argument(
        "--limit", dest="data.limit", type=int, help="use at most N samples of each split"
    )
    g.add_argument("--batch-size", dest="data.batch_size", type=int)
    g.add_argument("--val-split", dest="data.val_split", type=float)
    g.add_argument("--normalize", dest="data.normalize", choices=["unit", "standard", "none"])
    g.add_argument(
        "--augment",
        dest="data.augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random flip/translate (and --erase) in the input pipeline",
    )
    g.add_argument(
        "--erase",
        dest="data.erase",
        type=float,
        metavar="P",
        help="random-erasing probability when augmenting (and in --views)",
    )
    g.add_argument(
        "--mixup",
        dest="data.mixup",
        type=float,
        metavar="A",
        help="mix each augmented image (and each of --views) with another training image, "
        "weight ~ Beta(A, A); needs --lambda 0 (function matching). Default 0: off",
    )


def _teacher_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    g = p.add_argument_group("teacher")
    g.add_argument(
        "--teacher",
        dest="teacher.path",
        metavar="PATH",
        action="append",
        help="a .keras teacher, a teacher run folder or a snapshot (.weights.h5) of one; repeat to "
        "fuse several",
    )
    g.add_argument(
        "--fusion",
        dest="teacher.fusion",
        choices=["logits", "probs"],
        help="several teachers: weighted mean of logits (default) or of probabilities",
    )
    g.add_argument(
        "--teacher-weights",
        dest="teacher.fusion_weights",
        metavar="W1,W2,...",
        help="fusion weights, one per --teacher (default: proportional to val accuracy)",
    )
    g.add_argument(
        "--teacher-batch-size",
        dest="teacher.batch_size",
        type=int,
        help="teacher training batch (default: --batch-size)",
    )
    g.add_argument(
        "--precision",
        dest="teacher.precision",
        choices=["float32", "mixed_bfloat16", "auto"],
        help="teacher training precision; auto: bf16 where the CPU has it",
    )
    g.add_argument(
        "--teacher-augment",
        dest="teacher.augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="crop, flip and random erasing in the teacher stage (default on)",
    )
    g.add_argument(
        "--snapshot-every",
        dest="teacher.snapshot_every",
        type=int,
        metavar="N",
        help="keep the teacher's weights every N epochs (teacher_snapshots/)",
    )
    g.add_argument(
        "--weights",
        dest="teacher.weights",
        choices=["none", "imagenet"],
        help="ResNet50 from scratch (none) or fine-tuned from ImageNet",
    )
    g.add_argument(f"--{prefix}epochs", dest="teacher.epochs", type=int, help="teacher epochs")
    g.add_argument(
        "--head-epochs",
        dest="teacher.head_epochs",
        type=int,
        help="imagenet: epochs for the head before fine-tuning all layers",
    )
    g.add_argument(f"--{prefix}lr", dest="teacher.lr", type=float, help="teacher learning rate")
    g.add_argument(
        "--input-size", dest="teacher.input_size", type=int, help="adapter output side (>= 32)"
    )
    g.add_argument("--adapter", dest="teacher.adapter", choices=["pad", "resize"])
    g.add_argument("--label-smoothing", dest="teacher.label_smoothing", type=float)
    g.add_argument(
        "--unsafe-load",
        dest="teacher.unsafe_load",
        action="store_true",
        default=None,
        help="allow Lambda layers (arbitrary code) in .keras files you trust",
    )


def _distill_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distillation")
    g.add_argument(
        "--student", dest="distill.student", help="student name (kdq_tf students) or PATH.keras"
    )
    g.add_argument("--epochs", dest="distill.epochs", type=int, help="distillation epochs")
    g.add_argument("--lr", dest="distill.lr", type=float, help="distillation learning rate")
    g.add_argument("-T", "--temperature", dest="distill.temperature", type=float)
    g.add_argument(
        "--lambda", dest="distill.lam", type=float, help="L = L_soft + lambda*L_hard (default 0.5)"
    )
    g.add_argument(
        "--alpha", dest="distill.alpha", type=float, help="L = alpha*L_hard + (1-alpha)*L_soft"
    )
    g.add_argument(
        "--soft-loss",
        dest="distill.soft_loss",
        choices=["kl", "ce", "dist", "dkd"],
        help="kl (default), ce, dist (Huang et al. 2022: --dist-beta, --dist-gamma) or dkd "
        "(Zhao et al. 2022: --dkd-alpha, --dkd-beta)",
    )
    for name, text in (
        ("dist-beta", "DIST's inter-class weight (default 1)"),
        ("dist-gamma", "DIST's intra-class weight (default 1)"),
        ("dkd-alpha", "DKD's target-class weight (default 1)"),
        ("dkd-beta", "DKD's non-target weight (default 8)"),
    ):
        g.add_argument(f"--{name}", dest=f"distill.{name.replace('-', '_')}", type=float, help=text)
    g.add_argument("--hard-loss", dest="distill.hard_loss", choices=["ce", "mse"])
    g.add_argument(
        "--guidance",
        dest="distill.guidance",
        choices=["auto", "online", "cached", "cached-int8", "teacher-int8"],
    )
    g.add_argument(
        "--teacher-logits",
        dest="teacher.logits",
        metavar="FILE.npz",
        help="precomputed teacher logits (train/val, float or int8+scale) instead of a teacher",
    )
    g.add_argument(
        "--baseline",
        dest="distill.baseline",
        action="store_true",
        default=None,
        help="also train the student on hard labels only, for the KD gain",
    )
    g.add_argument(
        "--shrink",
        dest="distill.shrink",
        type=float,
        metavar="DELTA",
        help="soft-threshold the student's kernels by DELTA before QAT (which keeps the zeros)",
    )
    c = p.add_argument_group("flash below int8: fine-tuned under the teacher, kept through QAT")
    c.add_argument(
        "--cluster",
        dest="distill.cluster",
        type=int,
        metavar="N",
        help="N shared values per kernel (16: 4-bit indices for export --compress lut)",
    )
    c.add_argument(
        "--prune",
        dest="distill.prune",
        type=float,
        metavar="SPARSITY",
        help="magnitude pruning to this share of zeros (polynomial schedule)",
    )
    c.add_argument(
        "--structure-epochs",
        dest="distill.structure_epochs",
        type=int,
        help="epochs of the clustered/pruned fine-tuning (default 2)",
    )
    q = p.add_argument_group("quantization-aware training")
    q.add_argument("--qat", dest="qat.enabled", action="store_true", default=None)
    q.add_argument("--qat-epochs", dest="qat.epochs", type=int)
    q.add_argument("--qat-lr", dest="qat.lr", type=float)
    q.add_argument(
        "--qat-skip", dest="qat.skip", metavar="REGEX", help="keep matching layers in float"
    )


def _config(args: argparse.Namespace):
    overrides = {k: v for k, v in vars(args).items() if "." in k}
    if isinstance(overrides.get("teacher.path"), list):  # --teacher repeated: fuse the members
        overrides["teacher.path"] = ",".join(overrides["teacher.path"])
    return load_config(args.config, overrides, args.set)


def _print_table(title: str, table: str) -> None:
    print(f"\n{title}\n{table}")


def cmd_data_info(args) -> int:
    cfg = _config(args)
    raw = datasets.load_raw(cfg.data.dataset, cfg.data.data_dir, seed=cfg.run.seed)
    datasets.validate(raw)
    info = {
        "dataset": cfg.data.dataset,
        "source": raw.source,
        "shape": "x".join(map(str, raw.x_train.shape[1:])),
        "dtype": str(raw.x_train.dtype),
        "train_samples": len(raw.x_train),
        "test_samples": len(raw.x_test),
        "classes": len(raw.class_names),
        "class_names": list(raw.class_names),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for k, v in info.items():
        print(f"{k:14s} {', '.join(v) if isinstance(v, list) else v}")
    return 0


def cmd_teacher(args) -> int:
    from kdq_tf.pipeline import run_teacher

    cfg = _config(args)
    _, metrics = run_teacher(cfg, save_logits=args.save_logits)
    if args.save_logits:
        print(f"wrote {args.save_logits}")
    _print_table(f"Results ({cfg.run.out})", results_table(metrics))
    return 0


def cmd_distill(args) -> int:
    from kdq_tf.pipeline import run_distill

    cfg = _config(args)
    _, metrics = run_distill(cfg)
    _print_table(f"Results ({cfg.run.out})", results_table(metrics))
    return 0


def cmd_students(args) -> int:
    from kdq_tf.models.students import describe_students

    shape = tuple(int(v) for v in args.input_shape.lower().split("x"))
    if len(shape) != 3:
        raise KdqError(f"--input-shape expects HxWxC, e.g. 28x28x1; got {args.input_shape!r}")

    rows = [
        [r["name"], r["params"], r["macs"], r["description"]]
        for r in describe_students(shape, args.classes)
    ]
    print(markdown_table(["student", "params", "MACs", "description"], rows))
    return 0


def cmd_qat_sensitivity(args) -> int:
    from pathlib import Path

    from kdq_tf.data.dataset import load_dataset
    from kdq_tf.distill.qat import layer_sensitivity
    from kdq_tf.runs import load_student

    run = Path(args.run)
    if not (run / "student.keras").is_file() or not (run / "config.json").is_file():
        raise KdqError(
            f"{run} holds no distilled student (student.keras and config.json); "
            "run kdq_tf distill first"
        )
    cfg = config_from_dict(read_json(run / "config.json"))
    data = load_dataset(cfg.data, seed=cfg.run.seed)
    x_cal, _ = data.sample("train", 512, seed=cfg.run.seed)
    x_te, y_te = data.sample("test", args.samples, seed=cfg.run.seed)
    rows = layer_sensitivity(load_student(run / "student.keras"), x_cal, x_te, y_te)
    write_json(run / "qat_sensitivity.json", {"samples": len(y_te), "layers": rows})
    print(
        markdown_table(
            ["layer", "type", "float acc", "only this layer int8", "drop"],
            [
                [
                    r["layer"],
                    r["type"],
                    r["float_accuracy"],
                    r["quantized_accuracy"],
                    f"{100 * r['drop']:+.2f} pts",
                ]
                for r in rows
            ],
        )
    )
    return 0


def add_parsers(sub) -> None:
    data = sub.add_parser("data", help="inspect data sets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    info = dsub.add_parser(
        "info", help="shapes, classes, sample counts and where the data came from"
    )
    info.add_argument("--config")
    info.add_argument("--set", action="append", default=[])
    info.add_argument("--seed", dest="run.seed", type=int)
    _data_args(info)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_data_info)

    t = sub.add_parser("teacher", help="train (or fine-tune) the ResNet50 teacher")
    _common(t)
    _teacher_args(t)
    t.add_argument(
        "--save-logits",
        metavar="FILE.npz",
        help="write the teacher's int8 logits (all training rows, test, --views K views) for "
        "--teacher-logits",
    )
    t.set_defaults(func=cmd_teacher)

    d = sub.add_parser("distill", help="teacher -> distillation -> optional QAT")
    _common(d)
    _teacher_args(d, prefix="teacher-")
    _distill_args(d)
    d.set_defaults(func=cmd_distill)

    s = sub.add_parser("students", help="list the student models with parameters and MACs")
    s.add_argument("--input-shape", default="28x28x1", help="HxWxC (default 28x28x1)")
    s.add_argument("--classes", type=int, default=10)
    s.set_defaults(func=cmd_students)

    q = sub.add_parser("qat", help="QAT tools")
    qsub = q.add_subparsers(dest="qat_command", required=True)
    sens = qsub.add_parser(
        "sensitivity", help="accuracy with each layer alone quantized, versus float"
    )
    sens.add_argument("--run", required=True, help="a run directory from kdq_tf distill")
    sens.add_argument(
        "--samples", type=int, default=1000, help="test samples to score (default 1000)"
    )
    sens.set_defaults(func=cmd_qat_sensitivity)
