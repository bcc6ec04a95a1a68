"""The benchmark's teacher as an artifact: its int8 logits, with provenance, under
benchmarks/teachers/.

A strong ResNet50 takes hours on 2 cores, so the benchmark keeps what the teacher
produced, never its weights:

    logits.npz            int8 logits of the final teacher: every training row, the test
                          split, and K fixed augmented views (kdq_tf.teacher.logits_file format)
    snapshots/epoch_NNN.npz   the same without views, for teachers taken earlier in the run
    provenance.json       command, config, fingerprints, accuracies, hours, machine
    teacher_history.csv   the per-epoch training log; train.log: the run's console log

    python benchmarks/teacher_artifact.py --run RUN_DIR [--log RUN.log] [--views 4]

`make bench` reuses the folder after checking its fingerprints; `make bench TEACHER=retrain`
trains the teacher again (bench.py --retrain-teacher) and rewrites it.
"""

import argparse
import hashlib
import json
import logging
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT = ROOT / "benchmarks" / "teachers" / "fashion_mnist_resnet50"
log = logging.getLogger("teacher_artifact")

# The benchmark teacher's recipe (see README: "Does distillation help?"): ResNet50 from
# scratch behind the pad-32 adapter, bf16, batch 128, AdamW + cosine, crop/flip/erasing.
RECIPE = [
    "teacher.epochs=15",
    "teacher.lr=0.002",
    "teacher.batch_size=128",
    "teacher.precision=auto",
    "teacher.weight_decay=0.05",
    "teacher.erase=0.5",
    "teacher.snapshot_every=3",
    "teacher.augment=true",
]
# Stage 2: a warm restart from stage 1's teacher (teacher.init) with a new cosine cycle at half
# the rate and gentler erasing: stage 1 ended under-fitted (train 89% with augmentation,
# val 91.4% and still rising), and one session cannot hold 31 epochs.
RECIPE_CONTINUE = [
    "teacher.epochs=16",
    "teacher.lr=0.001",
    "teacher.batch_size=128",
    "teacher.precision=auto",
    "teacher.weight_decay=0.05",
    "teacher.erase=0.25",
    "teacher.snapshot_every=4",
    "teacher.augment=true",
]


# The fused teacher's second member: the full-resolution CNN (teacher.arch=cnn), 30 epochs in one
# session (~40 min on 2 cores in bf16). It errs differently from ResNet50, which fusion needs.
RECIPE_CNN = [
    "teacher.arch=cnn",
    "teacher.width=48",
    "teacher.epochs=30",
    "teacher.lr=0.002",
    "teacher.batch_size=128",
    "teacher.precision=auto",
    "teacher.weight_decay=0.05",
    "teacher.erase=0.25",
    "teacher.snapshot_every=5",
    "teacher.augment=true",
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_teacher(out: Path, log_path: Path, dataset: str = "fashion_mnist") -> list[Path]:
    """Trains the fused teacher's members, each resumable: the CNN in `out/cnn`, and ResNet50's
    two stages in `out/stage1` and `out/stage2`. Returns the members' run folders, CNN first
    (its snapshots make the KD-gain study's teachers)."""
    from kdq_tf import load_config, run_teacher

    handler = logging.FileHandler(log_path)
    logging.getLogger().addHandler(handler)
    base = [f"data.dataset={dataset}", "run.resume=true"]
    try:
        run_teacher(load_config(sets=[*base, f"run.out={out / 'cnn'}", *RECIPE_CNN]))
        run_teacher(load_config(sets=[*base, f"run.out={out / 'stage1'}", *RECIPE]))
        run_teacher(
            load_config(
                sets=[
                    *base,
                    f"run.out={out / 'stage2'}",
                    *RECIPE_CONTINUE,
                    f"teacher.init={out / 'stage1' / 'teacher.keras'}",
                ]
            )
        )
    finally:
        logging.getLogger().removeHandler(handler)
    return [out / "cnn", out / "stage2"]


def stages(run: Path, logs: list[Path] = ()) -> list[dict]:
    """The run and the runs it was warm-started from (teacher.init), oldest first: each stage's
    folder, config, metrics, the epochs it passed on, and the epoch count before it.

    A stage warm-started from a snapshot (`RUN/teacher_snapshots/*_epoch_NNN.weights.h5`) takes
    only NNN epochs of that run, which may have been stopped there: its hours then come from
    its console log (`logs`, oldest first, one per stage), the per-epoch seconds Keras prints.
    """
    from kdq_tf import files

    chain, used = [], None
    while run is not None:
        saved, metrics = (
            files.read_json(run / "config.json"),
            files.read_json(run / "metrics.json").get("teacher"),
        )
        if not saved or (not metrics and used is None):
            raise SystemExit(f"{run} is not a finished teacher run (config.json, metrics.json)")
        epochs = used or saved["teacher"]["epochs"]
        chain.append({"run": run, "config": saved, "metrics": metrics or {}, "epochs": epochs})
        init = saved["teacher"].get("init")
        if init and init.endswith(".weights.h5"):
            run, used = (
                Path(init).parent.parent,
                int(re.search(r"epoch_(\d+)", Path(init).name).group(1)),
            )
        else:
            run = (
                (Path(init).parent if Path(init).name == "teacher.keras" else Path(init))
                if init
                else None
            )
            used = None
    chain.reverse()
    before = 0
    for i, st in enumerate(chain):
        st["epochs_before"] = before
        before += st["epochs"]
        if st["epochs"] != st["config"]["teacher"]["epochs"] or not st["metrics"].get(
            "train_time_s"
        ):
            seconds = _epoch_seconds(logs[i]) if i < len(logs) else []
            if len(seconds) < st["epochs"]:
                raise SystemExit(
                    f"stage {st['run']} was used up to epoch {st['epochs']}; give its console log "
                    "(--log, one per stage, oldest first) for its hours"
                )
            st["metrics"] = {**st["metrics"], "train_time_s": sum(seconds[: st["epochs"]])}
    return chain


def _epoch_seconds(log_path: Path) -> list[float]:
    """Per-epoch seconds from a Keras console log ("422/422 - 269s - loss: ...")."""
    text = log_path.read_text() if log_path.is_file() else ""
    return [float(m[1]) for m in re.finditer(r"^\d+/\d+ - (\d+)s - loss", text, re.M)]


def _command(st: dict) -> str:
    t = st["config"]["teacher"]
    keys = (("arch", "width") if t.get("arch", "resnet50") != "resnet50" else ()) + (
        "epochs",
        "lr",
        "batch_size",
        "precision",
        "weight_decay",
        "erase",
        "snapshot_every",
        "init",
    )
    return f"kdq_tf teacher --out {st['run']} " + " ".join(
        f"--set teacher.{k}={t[k]}" for k in keys if t.get(k)
    )


def build(
    runs,
    dest: Path,
    views: int,
    run_logs=(),
    command: str = "",
    snapshots: tuple[int, ...] = (3, 9, 15, 19, 25),
    paused_s: float = 0.0,
) -> dict:
    """Writes the artifact folder from one finished teacher run, or fuses several; returns the
    provenance.

    A run warm-started from another (`teacher.init`) is followed back to its first stage:
    the hours add up, the epochs count from the first stage, and every stage's command
    goes into the provenance. Several runs are fused (kdq_tf.teacher.fusion) with the mode and
    weights that score best on the validation split (`choose_fusion`); the hours of all
    members add up.

    `run_logs`: the console logs of one run (a list of paths), or one such list per run.
    `snapshots`: the epochs (counted over all stages of the first run) whose snapshots get
    logits files too, teachers of lower accuracy for the KD-gain study; a few, to keep the
    folder under 10 MB.
    `paused_s`: seconds the first run's last stage was stopped (SIGSTOP) while its clock ran.
    """
    from kdq_tf import files
    from kdq_tf.config import config_from_dict
    from kdq_tf.data.dataset import load_dataset
    from kdq_tf.teacher.stage import write_logits_file

    runs = [Path(r) for r in (runs if isinstance(runs, (list, tuple)) else [runs])]
    logs = list(run_logs)
    if logs and not isinstance(logs[0], (list, tuple)):
        logs = [logs]
    logs += [[]] * (len(runs) - len(logs))
    chains = [stages(r, [Path(p) for p in lg]) for r, lg in zip(runs, logs)]
    for r in runs:
        if not (r / "teacher.keras").is_file():
            raise SystemExit(f"{r} has no teacher.keras")
    saved = chains[0][-1]["config"]
    cfg = config_from_dict({**saved, "distill": {**saved["distill"], "views": views}})
    data = load_dataset(cfg.data, seed=cfg.run.seed)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest / "snapshots", ignore_errors=True)
    t0 = time.perf_counter()
    teacher, metrics, fusion = _teacher(runs, chains, data)
    final = write_logits_file(cfg, data, teacher, metrics, dest / "logits.npz")
    snaps = _snapshot_logits(chains[0], saved, data, dest, snapshots)
    history = []  # the epochs each stage of the first run passed on, numbered over all its stages
    for st in chains[0]:
        header, *rows = (st["run"] / "teacher_history.csv").read_text().splitlines()
        history = history or [header]
        history += [
            f"{st['epochs_before'] + i},{r.split(',', 1)[1]}"
            for i, r in enumerate(rows[: st["epochs"]])
        ]
    files.write_text(dest / "teacher_history.csv", "\n".join(history) + "\n")
    noise = re.compile(r"^(W0000|I0000|E0000|WARNING: All log messages)")
    lines = [
        ln
        for lg in logs
        for path in lg
        if Path(path).is_file()
        for ln in Path(path).read_text().splitlines()
        if not noise.match(ln)
    ]
    if lines:
        files.write_text(dest / "train.log", "\n".join(lines) + "\n")
    total = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())

    def hours(st, first_run):
        return (
            st["metrics"]["train_time_s"] - (paused_s if first_run and st is chains[0][-1] else 0.0)
        ) / 3600

    members = [
        {
            "run": str(r),
            "command": " && ".join(_command(st) for st in chain),
            "stages": [
                {
                    "command": _command(st),
                    "epochs_used": st["epochs"],
                    "hours": hours(st, i == 0),
                    "accuracy": st["metrics"].get("accuracy"),
                    "val_accuracy": st["metrics"].get("val_accuracy"),
                }
                for st in chain
            ],
            "config": chain[-1]["config"]["teacher"],
            "hours": sum(hours(st, i == 0) for st in chain),
            "epochs": chain[-1]["epochs_before"] + chain[-1]["epochs"],
        }
        for i, (r, chain) in enumerate(zip(runs, chains))
    ]
    what = "ResNet50 teacher" if len(runs) == 1 else f"fused teacher ({len(runs)} members)"
    prov = {
        "what": f"int8 logits of the benchmark's {what} (weights are not kept in the repository)",
        "command": command or " ; ".join(m["command"] for m in members),
        "stages": members[0]["stages"],
        "members": members,
        "fusion": fusion,
        "config": saved,
        "teacher": metrics,
        "train_hours": sum(m["hours"] for m in members),
        "paused_s": paused_s,
        "epochs": members[0]["epochs"],
        "data_fingerprint": data.raw_fingerprint,
        "logits": {
            "file": "logits.npz",
            "sha256": sha256(dest / "logits.npz"),
            "views": views,
            "views_augment": final["views_augment"],
            "bytes": final["bytes"],
            "max_abs_int8_error": final["max_abs_int8_error"],
        },
        "snapshots": snaps,
        "artifact_bytes": total,
        "build_time_s": round(time.perf_counter() - t0, 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    from kdq_tf.teacher.logits_file import from_bytes

    prov["teacher_fingerprint"] = from_bytes(
        (dest / "logits.npz").read_bytes(), "logits.npz"
    ).teacher_fp
    files.write_json(dest / "provenance.json", prov)
    return prov


def _teacher(runs: list[Path], chains: list, data):
    """The teacher whose logits are stored: the one run's model, or the members fused. Returns
    `(model, metrics, fusion)`, fusion None for one run."""
    from kdq_tf.runs import evaluate
    from kdq_tf.teacher import fusion as TS

    info = data.info
    members = [TS.load_member(str(r), info.input_shape, info.num_classes) for r in runs]
    if len(members) == 1:
        return members[0].model, chains[0][-1]["metrics"], None
    from kdq_tf._keras import keras
    from kdq_tf.runs import predict_logits

    def mirrored(model):  # the member on left-right flipped images
        inputs = keras.Input(model.input_shape[1:])
        return keras.Model(inputs, model(TS.FlipWidth()(inputs), training=False))

    def logits(split, flip=False):
        return [
            predict_logits(mirrored(m.model) if flip else m.model, data, split) for m in members
        ]

    flips = data.augmentation().flip  # mirrored views only where training flipped too
    fusion = choose_fusion(
        logits("val"),
        logits("test"),
        data.split("val")[1],
        data.split("test")[1],
        logits("val", True) if flips else None,
        logits("test", True) if flips else None,
    )
    model = TS.fused_model(members, fusion["weights"], fusion["mode"], fusion["flip"])
    metrics = {
        **evaluate(model, data),
        "val_accuracy": evaluate(model, data, "val")["accuracy"],
        "source": "fused: " + ", ".join(str(r) for r in runs),
        "fusion": fusion["mode"],
        "train_time_s": sum(st["metrics"]["train_time_s"] for chain in chains for st in chain),
    }
    return model, metrics, fusion


def choose_fusion(
    val: list,
    test: list,
    y_val,
    y_test,
    val_flip: list | None = None,
    test_flip: list | None = None,
    grid: int = 10,
) -> dict:
    """The fusion mode, member weights and flip test-time augmentation with the best validation
    accuracy.

    `val`/`test`: each member's logits on the two splits; `val_flip`/`test_flip`: the same on the
    mirrored images, or None when flips are not label-preserving. Tries both modes (mean of
    logits, mean of probabilities) with the weights proportional to each member's validation
    accuracy and, for two members, every split of a `grid`-step simplex; with and without flip.
    The test split is only scored, never used to choose.
    """
    import numpy as np

    from kdq_tf.teacher import fusion as TS

    def acc(z, y):
        return float((np.asarray(z).argmax(-1) == np.asarray(y)).mean())

    def fuse(logits, flipped, w, mode, flip):
        if not flip:
            return TS.fuse_numpy(logits, w, mode)
        return TS.fuse_numpy(
            [*logits, *flipped], [v / 2 for v in w] * 2, mode
        )  # as fused_model(flip=True)

    singles = [
        {"val_accuracy": acc(v, y_val), "accuracy": acc(t, y_test)} for v, t in zip(val, test)
    ]
    candidates = [TS.weights_from_accuracy([s["val_accuracy"] for s in singles])]
    if len(val) == 2:
        candidates += [[i / grid, 1 - i / grid] for i in range(1, grid)]
    flips = (False, True) if val_flip is not None else (False,)
    tried = [
        {
            "mode": mode,
            "weights": [round(v, 4) for v in w],
            "flip": flip,
            "val_accuracy": acc(fuse(val, val_flip, w, mode, flip), y_val),
        }
        for flip in flips
        for mode in TS.FUSIONS
        for w in candidates
    ]
    best = dict(
        max(tried, key=lambda r: r["val_accuracy"])
    )  # first of equals: no flip, logits, accuracy weights
    best["accuracy"] = acc(
        fuse(test, test_flip, best["weights"], best["mode"], best["flip"]), y_test
    )
    return {**best, "members": singles, "tried": len(tried), "chosen_on": "val"}


def _snapshot_logits(
    chain: list, saved: dict, data, dest: Path, snapshots: tuple[int, ...]
) -> list[dict]:
    """Logits files for the chosen snapshots of one run (the final one is the teacher itself)."""
    from kdq_tf.config import config_from_dict
    from kdq_tf.runs import evaluate
    from kdq_tf.teacher.fusion import load_member
    from kdq_tf.teacher.stage import write_logits_file

    info = data.info
    total_epochs = chain[-1]["epochs_before"] + chain[-1]["epochs"]
    no_views = config_from_dict({**saved, "distill": {**saved["distill"], "views": 0}})
    snaps = []
    for st in chain:
        for snap in sorted((st["run"] / "teacher_snapshots").glob("*.weights.h5")):
            local = int(re.search(r"epoch_(\d+)", snap.name).group(1))
            epoch = st["epochs_before"] + local
            if local > st["epochs"] or epoch == total_epochs or epoch not in snapshots:
                continue
            model = load_member(str(snap), info.input_shape, info.num_classes).model
            m = {
                "accuracy": evaluate(model, data)["accuracy"],
                "val_accuracy": evaluate(model, data, "val")["accuracy"],
            }
            p = write_logits_file(
                no_views, data, model, m, dest / "snapshots" / f"epoch_{epoch:03d}.npz"
            )
            snaps.append(
                {
                    "epoch": epoch,
                    **m,
                    "file": f"snapshots/epoch_{epoch:03d}.npz",
                    "bytes": p["bytes"],
                    "member": str(chain[-1]["run"]),
                }
            )
            log.info("snapshot epoch %d: test %.4f", epoch, m["accuracy"])
    return snaps


def check(dest: Path, data) -> dict:
    """The artifact's provenance, after checking its files against their fingerprints and the data.

    Raises:
        SystemExit: a file is missing or changed, or the logits were made for other data.
    """
    from kdq_tf import files

    prov = files.read_json(dest / "provenance.json")
    if not prov:
        raise SystemExit(
            f"no teacher artifact in {dest}; run `make bench TEACHER=retrain` to make one"
        )
    if sha256(dest / "logits.npz") != prov["logits"]["sha256"]:
        raise SystemExit(
            f"{dest / 'logits.npz'} does not match provenance.json; rebuild with TEACHER=retrain"
        )
    if prov["data_fingerprint"] != data.raw_fingerprint:
        raise SystemExit(
            f"the teacher logits in {dest} were made for other data ({prov['data_fingerprint']} vs "
            f"{data.raw_fingerprint})"
        )
    return prov


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--run",
        required=True,
        action="append",
        help="a finished `kdq_tf teacher` run folder; give it again for each member of a fusion",
    )
    p.add_argument(
        "--log",
        action="append",
        default=[],
        help="a run's console logs, comma-separated, oldest stage first (once per --run): "
        "train.log",
    )
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--command", default="", help="the exact command that trained the teacher")
    p.add_argument(
        "--snapshots",
        default="3,9,15,19,25",
        help="epochs (over all stages) whose snapshots also get logits files",
    )
    p.add_argument("--dest", default=str(DEFAULT))
    p.add_argument(
        "--paused-s",
        type=float,
        default=0.0,
        help="seconds the training was stopped (SIGSTOP) while its clock ran; taken off the hours",
    )
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    prov = build(
        [Path(r) for r in a.run],
        Path(a.dest),
        a.views,
        [[Path(v) for v in lg.split(",") if v] for lg in a.log],
        a.command,
        tuple(int(v) for v in a.snapshots.split(",") if v),
        a.paused_s,
    )
    print(
        json.dumps(
            {k: prov[k] for k in ("teacher", "train_hours", "artifact_bytes", "snapshots")},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
