r"""Does fusing snapshots of one teacher run make a stronger teacher? Chosen on val, reported on
test.

Reads a teacher artifact (benchmarks/teacher_artifact.py): the final teacher's logits and its
snapshots' logits, all int8, rows in the raw data order. Every set of members that includes
the final teacher is fused (kdq_tf.teacher.fusion.fuse_numpy, weights from val accuracy, both fusion
modes); the best on the validation split is reported with its test accuracy. No model is run.

    python benchmarks/teacher_fusion.py \
        --teacher-dir benchmarks/teachers/fashion_mnist_resnet50_31ep
"""

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def members(dest: Path, data) -> list[dict]:
    from kdq_tf import files
    from kdq_tf.teacher.logits_file import for_split, from_bytes

    prov = files.read_json(dest / "provenance.json")
    rows = [("final", dest / "logits.npz")] + [
        (f"epoch {s['epoch']}", dest / s["file"]) for s in prov["snapshots"]
    ]
    out = []
    for name, path in rows:
        t = for_split(from_bytes(path.read_bytes(), path.name), data, path.name)
        out.append({"name": name, "val": t.val, "test": t.test})
    return out


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(-1) == y).mean())


def study(ms: list[dict], y_val: np.ndarray, y_test: np.ndarray) -> dict:
    from kdq_tf.teacher.fusion import fuse_numpy, weights_from_accuracy

    single = [
        {
            "members": [m["name"]],
            "val": accuracy(m["val"], y_val),
            "test": accuracy(m["test"], y_test),
        }
        for m in ms
    ]
    fused = []
    for k in range(2, len(ms) + 1):
        for group in itertools.combinations(range(len(ms)), k):
            if 0 not in group:
                continue  # the final teacher is always in
            g = [ms[i] for i in group]
            w = weights_from_accuracy([accuracy(m["val"], y_val) for m in g])
            for mode in ("logits", "probs"):
                fused.append(
                    {
                        "members": [m["name"] for m in g],
                        "mode": mode,
                        "weights": w,
                        "val": accuracy(fuse_numpy([m["val"] for m in g], w, mode), y_val),
                        "test": accuracy(fuse_numpy([m["test"] for m in g], w, mode), y_test),
                    }
                )
    # The final teacher alone is a candidate too: fusion has to earn its place on val.
    best = max([{**single[0], "mode": None, "weights": [1.0]}, *fused], key=lambda r: r["val"])
    return {"single": single, "fused": fused, "best_on_val": best}


def markdown(res: dict) -> str:
    lines = [
        f"# Fusing snapshots of one teacher run ({res['teacher_dir']})",
        "",
        "| teacher | val % | test % |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r['members'][0]} | {100 * r['val']:.2f} | {100 * r['test']:.2f} |"
        for r in res["single"]
    ]
    b = res["best_on_val"]
    tried = f"{len(res['fused'])} fusions tried, each with the final teacher"
    if b["mode"] is None:
        lines += [
            "",
            f"No fusion beats the final teacher alone on the validation split ({tried}).",
            "",
        ]
    else:
        lines += [
            "",
            f"Best on the validation split: {' + '.join(b['members'])} ({b['mode']}, weights "
            f"{', '.join(f'{w:.3f}' for w in b['weights'])}): val {100 * b['val']:.2f}%, test "
            f"{100 * b['test']:.2f}% ({tried}).",
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument(
        "--teacher-dir",
        default=str(ROOT / "benchmarks" / "teachers" / "fashion_mnist_resnet50_31ep"),
    )
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--name", default="teacher_fusion")
    a = p.parse_args(argv)
    from kdq_tf import files
    from kdq_tf.config import DataConfig
    from kdq_tf.data.dataset import load_dataset

    data = load_dataset(DataConfig(dataset=a.dataset))
    res = study(members(Path(a.teacher_dir), data), data.y_val, data.y_test)
    res["teacher_dir"] = (
        str(Path(a.teacher_dir).relative_to(ROOT))
        if Path(a.teacher_dir).is_relative_to(ROOT)
        else a.teacher_dir
    )
    files.write_json(Path(a.results) / f"{a.name}.json", res)
    md = markdown(res)
    files.write_text(Path(a.results) / f"{a.name}.md", md)
    print(md)
    print(json.dumps({"best_on_val": res["best_on_val"]}))
    return res


if __name__ == "__main__":
    main()
