"""Command line, runtime side: commands on a `.tflite` (verify, inspect, infer, eval, bench).

`infer`, `eval` and `bench` run on LiteRT alone, without TensorFlow, as on a device.
"""

import json
import logging

import numpy as np

from kdq_tf import files
from kdq_tf.cli.args import dataset_only
from kdq_tf.data import readers as datasets
from kdq_tf.deploy.flatbuf import describe, read_metadata, validate
from kdq_tf.errors import KdqError
from kdq_tf.report import classification_metrics, confusion_matrix, markdown_table
from kdq_tf.runtime.inputs import ModelIO, fit_array, load_inputs
from kdq_tf.runtime.runner import Runner, benchmark

log = logging.getLogger("kdq_tf")


def _read_model(path: str) -> bytes:
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise KdqError(f"model file {p} does not exist")
    data = p.read_bytes()
    validate(data, str(p))  # before any interpreter sees it: LiteRT may crash on a truncated file
    return data


def cmd_verify(args) -> int:
    from pathlib import Path

    from kdq_tf.data.dataset import load_dataset
    from kdq_tf.deploy.export import load_run_model, run_config, verify

    data_bytes = _read_model(args.model)
    run = Path(args.run)
    cfg = run_config(run, {}, ())
    data = load_dataset(cfg.data, seed=cfg.run.seed)
    x, y = data.sample("test", args.samples, seed=cfg.run.seed)
    res = verify(data_bytes, load_run_model(run, cfg).model, x, y)
    print(json.dumps(res, indent=2))
    return 0


def cmd_inspect(args) -> int:
    data = _read_model(args.model)
    d = describe(data)
    if not args.no_arena:
        from kdq_tf.device.micro import find_arena_size

        d["arena_bytes"] = find_arena_size(data)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(
        f"{args.model}: {d['bytes']:,} bytes ({d['weights_bytes']:,} weights, "
        f"{d['overhead_bytes']:,} "
        f"flatbuffer overhead), {d['operators']} operators"
    )
    print(f"ops: {', '.join(d['ops'])}")
    if "arena_bytes" in d:
        print(f"TFLM arena: {d['arena_bytes']:,} bytes")
    if d["metadata"]:
        print(f"classes: {', '.join(d['metadata'].get('class_names', []))}")
    rows = [
        [
            t["index"],
            t["name"][:48],
            t["dtype"],
            "x".join(map(str, t["shape"])),
            ",".join(f"{v:.4g}" for v in t["scale"]) + ("..." if t["per_channel"] else ""),
            ",".join(map(str, t["zero_point"][:1])),
        ]
        for t in d["tensors"]
    ]
    print(markdown_table(["#", "tensor", "dtype", "shape", "scale", "zero point"], rows))
    return 0


def _runner_and_io(model_path: str, threads: int | None = None):
    data = _read_model(model_path)
    runner = Runner.from_bytes(data, threads=threads)
    io = ModelIO.from_model(
        read_metadata(data), runner.input_details, int(runner.output_details["shape"][-1])
    )
    return runner, io


def cmd_infer(args) -> int:
    runner, io = _runner_and_io(args.model, args.threads)
    x, names = load_inputs(args.inputs, io.input_shape)
    probs = runner.predict(io.preprocess.apply(x))
    results = []
    for name, p in zip(names, probs):
        top = np.argsort(p)[::-1][: args.top]
        results.append(
            {
                "input": name,
                "class": io.class_names[top[0]],
                "index": int(top[0]),
                "probability": float(p[top[0]]),
                "top": [{"class": io.class_names[i], "probability": float(p[i])} for i in top],
            }
        )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['input']}: {r['class']} ({100 * r['probability']:.1f}%)")
    return 0


def cmd_eval(args) -> int:
    from pathlib import Path

    runner, io = _runner_and_io(args.model, args.threads)
    raw = datasets.load_raw(args.dataset, args.data_dir)
    datasets.validate(raw)
    x, y = raw.x_test, raw.y_test.astype(np.int64)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    if x.shape[1:] != io.input_shape:
        x = fit_array(x, io.input_shape, args.dataset)
    pred = runner.predict_logits(io.preprocess.apply(x)).argmax(-1)
    k = len(io.class_names)
    if y.max() >= k:
        raise KdqError(
            f"{args.dataset} has labels up to {int(y.max())} but the model has {k} classes"
        )
    m = classification_metrics(y, pred, k)
    cm = confusion_matrix(y, pred, k)
    out = Path(args.out) if args.out else Path(str(args.model) + ".eval.json")
    result = {
        "model": str(args.model),
        "dataset": args.dataset,
        "source": raw.source,
        **m.to_dict(),
        "class_names": list(io.class_names),
        "confusion_matrix": cm.tolist(),
    }
    files.write_json(out, result)
    print(
        f"accuracy {100 * m.accuracy:.2f}%  macro precision {100 * m.precision:.2f}%  recall "
        f"{100 * m.recall:.2f}%  F1 {100 * m.f1:.2f}%  ({m.n} samples from {raw.source})"
    )
    names = [n[:10] for n in io.class_names]
    print(
        markdown_table(
            ["true \\ pred", *names], [[names[i], *map(int, row)] for i, row in enumerate(cm)]
        )
    )
    print(f"wrote {out}")
    png = _confusion_png(cm, io.class_names, out.with_suffix(".png"))
    if png:
        print(f"wrote {png}")
    return 0


def _confusion_png(cm, names, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(names), 1 + 0.6 * len(names)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cmd_bench(args) -> int:
    runner = Runner.from_bytes(_read_model(args.model), threads=args.threads)
    other = (
        Runner.from_bytes(_read_model(args.compare), threads=args.threads) if args.compare else None
    )
    res = benchmark(runner, runs=args.runs, warmup=args.warmup, other=other)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    for label, key, path in (("model", "model", args.model), ("compare", "other", args.compare)):
        if key in res:
            r = res[key]
            print(
                f"{label}: {path}  {r['input_dtype']}->{r['output_dtype']}, "
                f"threads {r['threads']}, "
                f"{r['runs']} runs: min {r['min_ms']:.3f} ms, median {r['median_ms']:.3f} ms, "
                f"p90 {r['p90_ms']:.3f} ms per inference (batch 1)"
            )
    if "median_ratio" in res:
        print(
            f"median latency ratio model/compare: {res['median_ratio']:.3f} (measured alternately)"
        )
    return 0


def add_parsers(sub) -> None:
    v = sub.add_parser(
        "verify", help="run a .tflite on LiteRT and TFLite-Micro against the run's Keras model"
    )
    v.add_argument("model")
    v.add_argument("--run", required=True)
    v.add_argument("--samples", type=int, default=1000)
    v.set_defaults(func=cmd_verify)

    ins = sub.add_parser(
        "inspect", help="ops, tensors, quantization, sizes and arena of any .tflite"
    )
    ins.add_argument("model")
    ins.add_argument("--json", action="store_true")
    ins.add_argument("--no-arena", action="store_true", help="skip the TFLM arena search")
    ins.set_defaults(func=cmd_inspect)

    inf = sub.add_parser(
        "infer", help="classify images/.npy/.npz with a .tflite (no TensorFlow needed)"
    )
    inf.add_argument("model")
    inf.add_argument("inputs", nargs="+", help="PNG/JPEG files, .npy arrays, or .npz files with x")
    inf.add_argument("--top", type=int, default=1)
    inf.add_argument("--threads", type=int)
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(func=cmd_infer)

    ev = sub.add_parser(
        "eval", help="accuracy, precision/recall/F1 and confusion matrix of a .tflite"
    )
    ev.add_argument("model")
    dataset_only(ev)
    ev.add_argument("--limit", type=int, help="use the first N test samples")
    ev.add_argument("--out", help="JSON result path (default MODEL.eval.json)")
    ev.add_argument("--threads", type=int)
    ev.set_defaults(func=cmd_eval)

    b = sub.add_parser(
        "bench", help="batch-1 latency on LiteRT; --compare runs two models alternately"
    )
    b.add_argument("model")
    b.add_argument("--compare", metavar="OTHER.tflite")
    b.add_argument("--runs", type=int, default=200)
    b.add_argument("--warmup", type=int, default=20)
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
