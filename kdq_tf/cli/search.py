"""`kdq_tf search`: the budget-driven search (kdq_tf.search). Everything the user typed is
checked here, before TensorFlow loads and before the search folder is touched."""

import re
from pathlib import Path

from kdq_tf.cli.args import dataset_only
from kdq_tf.errors import KdqError
from kdq_tf.search.budget import Budget, parse_bytes, parse_count

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*$")


def parse_duration(text: str) -> float:
    """'2h' -> 7200.0; s, m (min) or h; a bare number is seconds."""
    m = _DURATION.match(str(text))
    if not m or float(m[1]) <= 0:
        raise KdqError(f"--time-limit must be a positive duration like 90m or 2h, got {text!r}")
    return float(m[1]) * {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[m[2]]


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "search",
        help="find the most accurate student that fits a device budget (Optuna)",
        description="Samples students from a search space, rejects those whose estimate is "
        "over budget, distills and QAT-trains the rest on cached teacher logits (ASHA prunes "
        "the weak after one epoch), converts each to full int8 (LUT when sampled) and measures "
        "its real Cortex-M image (--target) under QEMU. Exit 1 when nothing fits.",
    )
    dataset_only(p)
    teacher = p.add_mutually_exclusive_group(required=True)
    teacher.add_argument(
        "--teacher-logits",
        metavar="NPZ",
        help="the teacher's logits (kdq_tf teacher --save-logits)",
    )
    teacher.add_argument(
        "--teacher",
        metavar="PATH",
        help="a teacher .keras, a teacher run folder, or several comma-separated (fused): its "
        "logits are computed once into the search folder",
    )
    p.add_argument(
        "--space",
        metavar="TOML",
        help="search space ([space] table; default: the built-in one, see docs/search.md)",
    )
    p.add_argument("--flash", help="flash budget of the whole image, e.g. 192KiB")
    p.add_argument("--ram", help="RAM budget of the whole image (arena + data + bss), e.g. 64KiB")
    p.add_argument("--instructions", help="instructions per inference, e.g. 12M")
    p.add_argument(
        "--target",
        default="cortex-m4",
        help="the board every image is measured on: cortex-m4 (QEMU mps2-an386, the default), "
        "cortex-m7, cortex-m33 or cortex-m55 (docs/firmware.md#more-cores)",
    )
    p.add_argument(
        "--kernels",
        default="auto",
        help="cmsis-nn, reference or auto (measure the "
        "space's kernel sets, ship the one that fits with the fewest instructions)",
    )
    p.add_argument(
        "--trials", type=int, help="trained candidates to try (default 20 without --time-limit)"
    )
    p.add_argument("--time-limit", help="start no trial after this long, e.g. 2h")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="searches/latest", help="the search folder")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the search in --out (or join it as another worker)",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="an Optuna storage shared by workers, e.g. "
        "postgresql://user@host/db (default: the journal file in --out)",
    )
    p.add_argument("--study-name", default="kdq_tf_search")
    p.add_argument("--tflm", metavar="TFLM_DIR", help="TFLite-Micro tree (default $TFLM_DIR)")
    p.add_argument("--limit", type=int, help="use at most N images of each split (quick tries)")
    p.add_argument("--val-split", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=3, help="distillation epochs per trial")
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--structure-epochs", type=int, default=1, help="clustering epochs (LUT)")
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--pruner", default="asha", help="asha, hyperband or none")
    p.add_argument(
        "--finalists",
        type=int,
        default=3,
        help="after the search (and its --time-limit), train the best N fitting candidates "
        "again on the long schedule and ship the best of them (default 3; 0: off)",
    )
    p.add_argument("--final-epochs", type=int, default=12, help="the finalists' distillation")
    p.add_argument("--final-qat-epochs", type=int, default=2, help="the finalists' QAT")
    p.add_argument(
        "--no-export",
        action="store_true",
        help="do not export the chosen model (and do not score the test split)",
    )
    p.set_defaults(func=cmd_search)


def settings_from(args):
    from kdq_tf.device import tflm_tree
    from kdq_tf.search.engine import SearchSettings
    from kdq_tf.search.space import SearchSpace
    from kdq_tf.search.trial import TrialSchedule

    budget = Budget(
        flash=parse_bytes(args.flash, "--flash") if args.flash is not None else None,
        ram=parse_bytes(args.ram, "--ram") if args.ram is not None else None,
        instructions=(
            parse_count(args.instructions, "--instructions")
            if args.instructions is not None
            else None
        ),
    )
    space = SearchSpace.from_toml(args.space) if args.space else SearchSpace()
    if args.teacher_logits and not Path(args.teacher_logits).is_file():
        raise KdqError(
            f"--teacher-logits {args.teacher_logits} is not a file; make one with "
            "`kdq_tf teacher --save-logits` (docs/teachers.md), or give --teacher PATH"
        )
    for member in (args.teacher or "").split(","):
        if member.strip() and not Path(member.strip()).exists():
            raise KdqError(
                f"--teacher {member.strip()} does not exist; give a .keras file or a "
                "teacher run folder"
            )
    if args.limit is not None and args.limit < 1:
        raise KdqError(f"--limit must be >= 1, got {args.limit}")
    if not 0 < args.val_split < 1:
        raise KdqError(
            f"--val-split must be in (0, 1): the search selects on it, got {args.val_split}"
        )
    time_limit = parse_duration(args.time_limit) if args.time_limit else None
    s = SearchSettings(
        out=args.out,
        budget=budget,
        teacher_logits=args.teacher_logits,
        teacher=args.teacher,
        space=space,
        schedule=TrialSchedule(
            epochs=args.epochs,
            qat_epochs=args.qat_epochs,
            structure_epochs=args.structure_epochs,
            lr=args.lr,
            batch_size=args.batch_size,
        ),
        target=args.target,
        kernels=args.kernels,
        trials=args.trials if args.trials is not None or time_limit else 20,
        time_limit=time_limit,
        seed=args.seed,
        dataset=args.dataset,
        data_dir=args.data_dir,
        limit=args.limit,
        val_split=args.val_split,
        tflm=args.tflm,
        storage=args.storage,
        study_name=args.study_name,
        pruner=args.pruner,
        resume=args.resume,
        finalize=not args.no_export,
        finalists=args.finalists,
        final_epochs=args.final_epochs,
        final_qat_epochs=args.final_qat_epochs,
    )
    tflm_tree.check_tree(s.tflm, [], "cmsis-nn" in s.kernel_sets)
    return s


def cmd_search(args) -> int:
    from kdq_tf.search.engine import run_search
    from kdq_tf.search.front import miss_line

    s = settings_from(args)
    summary = run_search(s)
    out = Path(s.out)
    print(
        f"{summary['trials']} trials ({summary['trained']} trained, "
        f"{summary['rejected_before_training']} rejected on their estimate, "
        f"{summary['pruned']} pruned), {summary['fit']} fit; {summary['wall_time_s']:.0f} s"
    )
    c = summary["chosen"]
    if not c:
        print(f"no candidate fits {s.budget.describe()}; the closest:")
        for row in summary["closest"] or []:
            print(f"  {miss_line(row)}")
        print(f"every trial: {out / 'trials.json'}")
        return 1
    f = c["figures"]
    rung = f" after {s.final_epochs} epochs (final rung)" if c.get("rung") else ""
    print(
        f"chosen{rung}: trial {c['trial']} {c['candidate']['key']} [{c['kernels']}]: val int8 "
        f"{100 * c['val_accuracy']:.2f}%, flash {f['flash']:,} B, RAM {f['ram']:,} B, "
        f"{(f['instructions'] or 0) / 1e6:.2f} M instructions, bit-exact {c['bit_exact']}"
    )
    ex = summary.get("chosen_export")
    if ex:
        print(
            f"test accuracy (int8, scored once): {100 * ex['test_accuracy_int8']:.2f}%; "
            f"firmware: {out / ex['firmware']}"
        )
    print(
        f"results: {out / 'pareto.md'}, {out / 'search.png'}; "
        f"watch: optuna-dashboard {out / 'study.journal'}"
    )
    return 0
