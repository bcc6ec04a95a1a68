"""Metrics (numpy only) and every table the CLI and the reports show: a run's, export's and the
device runs'. No TensorFlow and nothing above it: every side imports this."""

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    precision: float  # macro average over classes
    recall: float
    f1: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts; rows are true classes, columns predictions."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(
        cm, (np.asarray(y_true, np.int64).reshape(-1), np.asarray(y_pred, np.int64).reshape(-1)), 1
    )
    return cm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> Metrics:
    """Accuracy plus macro precision, recall and F1.

    A class never predicted has precision 0 and a class absent from `y_true` has
    recall 0 (the scikit-learn `zero_division=0` convention); classes absent from
    both are left out of the macro average.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    pred, true = cm.sum(0), cm.sum(1)
    present = (pred + true) > 0
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    n = int(cm.sum())
    return Metrics(
        accuracy=float(tp.sum() / max(n, 1)),
        precision=float(precision[present].mean()),
        recall=float(recall[present].mean()),
        f1=float(f1[present].mean()),
        n=n,
    )


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table; floats in [0, 1] print as percentages."""

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{100 * v:.2f}%" if 0.0 <= v <= 1.0 else f"{v:.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return "" if v is None else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(metrics: dict) -> str:
    """The run summary: one row per model stage found in a run's metrics.json (and per fused
    teacher)."""
    rows = []
    for m in metrics.get("teacher", {}).get("members", []):
        rows.append(
            [
                f"teacher member ({m['source']}, weight {m['weight']:.3f})",
                m.get("val_accuracy"),
                m.get("accuracy"),
                None,
                None,
                None,
            ]
        )
    for stage in ("teacher", "baseline", "student", "baseline_qat", "student_qat"):
        m = metrics.get(stage)
        if not m:
            continue
        seconds = m.get(
            "train_time_s"
        )  # a string: markdown_table would print 0.0-1.0 s as a percentage
        rows.append(
            [
                stage,
                m.get("val_accuracy"),
                m.get("accuracy"),
                m.get("f1"),
                m.get("params"),
                None if seconds is None else f"{seconds:.1f}",
            ]
        )
    table = markdown_table(
        ["model", "val accuracy", "test accuracy", "macro F1", "params", "train time (s)"], rows
    )
    return "\n".join([table, *kd_gain_lines(metrics)])


def kd_gain_lines(metrics: dict) -> list[str]:
    """What distillation bought: the student's test accuracy over its scratch twin's, per stage
    that has both (float, and QAT), in points. One seed: read it against the seed-to-seed
    spread that benchmarks/results/full.md gives (0.1-0.2 pts)."""
    lines = []
    for student, twin, what in (
        ("student", "baseline", "float"),
        ("student_qat", "baseline_qat", "QAT"),
    ):
        a, b = (metrics.get(k, {}).get("accuracy") for k in (student, twin))
        if a is not None and b is not None:
            lines.append(
                f"- KD gain ({what}): {100 * (a - b):+.2f} pts test accuracy, distilled "
                f"{100 * a:.2f}% against the scratch twin's {100 * b:.2f}%"
            )
    return ([""] + lines) if lines else []


def weights_table(weights: list[dict], plan: list[dict]) -> str:
    """Per int8 weight tensor: distinct values (per channel where quantized per channel), the share
    of zeros (what pruning left after QAT and conversion) and what LUT compression did with it."""
    by_index = {p["index"]: p for p in plan}
    rows = []
    for w in weights:
        p = by_index.get(w["index"])
        saved = (
            "" if p is None or p.get("saved_bytes") is None else f", {p['saved_bytes']:,} B saved"
        )
        lut = (
            ""
            if p is None
            else (
                f"{p['bits']}-bit {p['mode'].replace('_', ' ')}{saved}"
                if p["compress"]
                else f"left: {p.get('reason', '')}"
            )
        )
        per = w.get("unique_per_channel")
        rows.append(
            [
                w["name"].split(";")[0],
                "x".join(map(str, w["shape"])),
                f"{w['bytes']:,}",
                f"{w['unique']}" + ("" if per is None else f" / {per} per channel"),
                f"{100 * w['zeros']:.1f}%",
                lut,
            ]
        )
    headers = ["int8 weight tensor", "shape", "bytes", "distinct values", "zeros"] + (
        ["LUT"] if plan else []
    )
    return markdown_table(headers, [r if plan else r[:-1] for r in rows])


def export_markdown(report: dict, metrics: dict) -> str:
    """The export table: teacher vs student vs int8 with accuracy, size and arena."""
    v = report.get("verify", {})
    s = report["sizes"]
    rows = []
    if "teacher" in metrics:
        rows.append(
            [
                "teacher (float, Keras)",
                metrics["teacher"]["accuracy"],
                metrics["teacher"]["params"],
                None,
                None,
            ]
        )
    if "student" in metrics:
        rows.append(
            [
                "student (float, Keras)",
                metrics["student"]["accuracy"],
                metrics["student"]["params"],
                s["float32_tflite_bytes"],
                None,
            ]
        )
    if "student_qat" in metrics:
        rows.append(
            [
                "student QAT (Keras)",
                metrics["student_qat"]["accuracy"],
                metrics["student_qat"]["params"],
                None,
                None,
            ]
        )
    rows.append(
        [
            f"{report['mode']} .tflite (LiteRT)",
            report.get("test_accuracy_litert", v.get("accuracy_litert")),
            None,
            s["tflite_bytes"],
            v.get("arena_bytes"),
        ]
    )
    table = markdown_table(
        ["model", "test accuracy", "params", ".tflite bytes", "TFLM arena bytes"], rows
    )
    lines = [f"# kdq_tf export ({report['mode']})", "", table, ""]
    if v:
        lines += [
            "- accuracies above are on the whole test split "
            f"({report.get('test_samples')} images); the "
            f"runtime checks below on {v['samples']} of them",
            f"- TFLM vs LiteRT top-1 agreement: {100 * v['top1_agreement_tflm_litert']:.2f}%; "
            "bit-exact outputs vs LiteRT reference kernels: "
            f"{100 * v['exact_outputs_tflm_vs_litert_ref']:.2f}%",
        ]
        if "top1_agreement_keras_litert" in v:
            lines.append(
                f"- Keras vs int8 top-1 agreement: {100 * v['top1_agreement_keras_litert']:.2f}% "
                f"(Keras {100 * v['accuracy_keras']:.2f}%, int8 {100 * v['accuracy_litert']:.2f}% "
                "on the same samples)"
            )
    if "device_model" in v:
        d = v["device_model"]
        lines.append(
            f"- device flatbuffer (model_data.cc): {d['bytes']:,} B, "
            f"{d['saved_bytes']:,} B less than the "
            f".tflite (metadata, names, signatures stripped); bit-exact with it on TFLM on "
            f"{d['bit_exact_tflm']}/{d['samples']} samples"
        )
    if "compressed" in report:
        c = report["compressed"]
        lines.append(
            f"- LUT-compressed device model: {c['bytes']:,} B "
            f"({c['ratio']}x of {c['uncompressed_bytes']:,} "
            f"B; {c['tensors_compressed']} tensors), "
            "bit-exact with the uncompressed one on TFLM on "
            f"{c['bit_exact_tflm']}/{c['samples']} samples, "
            f"arena {c['arena_bytes']:,} B with DECODE operators"
        )
        if c.get("fused"):
            groups = ", ".join(str(-(-f["cout"] // f["group"])) for f in c["fused"])
            lines.append(
                f"- in the firmware (model_data.cc, `{c['fused_file']}`): "
                f"{len(c['fused'])} DECODE -> CONV_2D pairs fused into KDQ_LUT_CONV, which decodes "
                f"its kernel a group of output channels at a time (groups per layer: {groups})"
            )
    lines += [
        f"- float32/{report['mode']} size ratio: {s['float32_over_this']}x; gzip -9 of the .tflite "
        f"{s['gzip_bytes']:,} B; flatbuffer overhead "
        f"{s['overhead_bytes']} bytes ({100 * s['overhead_share']:.1f}% of the file)",
        f"- ops: {', '.join(report['ops'])}",
        "",
    ]
    if report.get("weights"):
        lines += [
            weights_table(report["weights"], report.get("compressed", {}).get("tensors", [])),
            "",
        ]
    if report.get("device"):
        lines += [
            "## On the device (kdq_tf firmware run)",
            "",
            device_table(report["device"]["runs"], heading=False),
        ]
    for prof in (report.get("profiles") or {}).values():
        lines += ["", profile_markdown(prof)]
    return "\n".join(lines)


def _shapes(shapes: list) -> str:
    """ "28x28x24": a batch of one is left out; a weight tensor keeps its output channels."""
    return ", ".join(
        "x".join(str(d) for d in (s[1:] if s[:1] == [1] and len(s) > 1 else s)) for s in shapes
    )


def profile_markdown(prof: dict) -> str:
    """`kdq_tf firmware profile`'s table: one row per operator, in execution order."""
    rows = [
        [
            r["index"],
            r["op"],
            _shapes(r["input_shapes"]),
            _shapes(r["output_shapes"]),
            f"{r['macs']:,}" if r["macs"] else "",
            f"{r['instructions']:,}",
            f"{r['instructions_per_mac']:.2f}" if r["instructions_per_mac"] is not None else "",
            f"{100 * r['share']:.1f}%" if r["share"] is not None else "",
            f"{r['arena_bytes']:,}",
        ]
        for r in prof["operators"]
    ]
    head = ["#", "op", "input", "output", "MACs", "instructions", "instr/MAC", "share"]
    whole = prof["instructions_per_inference"]
    per_mac = f" ({whole / prof['macs']:.2f} per MAC)" if prof["macs"] else ""
    return (
        f"## Per-operator profile: {prof['model']} on {prof['target']}, "
        f"{prof['kernels']} kernels\n\n"
        + markdown_table(head + ["arena bytes"], rows)
        + f"\n\nOne inference: {whole:,} instructions for {prof['macs']:,} MACs{per_mac}; the "
        f"operators account for {prof['operators_instructions']:,} "
        f"({100 * prof['operators_share']:.1f}%), the interpreter between them for the rest. "
        f"Bit-exact against the Python TFLM interpreter on {prof['bit_exact']}/{prof['samples']} "
        "inputs. QEMU counts the instructions (`-icount shift=0`), averaged over the embedded "
        "inputs; arena bytes are the operator's own non-constant tensors (no scratch).\n"
    )


def instruction_ratio(runs: dict) -> float | None:
    """Instructions per inference, reference kernels over CMSIS-NN, on the Cortex-M4; None until
    both ran."""
    ref, nn = runs.get("cortex-m4/reference", {}), runs.get("cortex-m4/cmsis-nn", {})
    a, b = ref.get("instructions_per_inference"), nn.get("instructions_per_inference")
    return round(a / b, 2) if a and b else None


def device_table(runs: dict, heading: bool = True) -> str:
    rows = []
    for key, r in runs.items():
        m = r["memory"]
        rows.append(
            [
                key,
                f"{r['bit_exact']}/{r['samples']}",
                f"{100 * r['top1_agreement']:.0f}%",
                f"{r['correct']}/{r['samples']}",
                m["flash_bytes"],
                m["flash_model_bytes"],
                m.get("flash_tflm_bytes", ""),
                m["flash_code_and_tflm_bytes"],
                m["ram_bytes"],
                m["ram_arena_bytes"],
                f"{r['arena_used_bytes']} / {r['arena_chosen_bytes']}",
                r.get("instructions_per_inference"),
            ]
        )
    table = markdown_table(
        [
            "target/kernels",
            "bit-exact vs Python TFLM",
            "top-1 agreement",
            "correct",
            "flash bytes",
            "model",
            "TFLM",
            "all code",
            "RAM bytes",
            "arena (RAM)",
            "arena used / chosen",
            "instructions per inference",
        ],
        rows,
    )
    lines = (["# kdq_tf firmware on the device", ""] if heading else []) + [table, ""]
    for key, r in runs.items():
        names = r.get("class_names") or []
        classes = ", ".join(
            f"{n}{'' if p == y else ' (label: ' + (names[y] if y < len(names) else str(y)) + ')'}"
            for n, p, y in zip(r["predicted_names"], r["predicted"], r["labels"])
        )
        lines.append(f"- {key}: classes of the embedded test images, in order: {classes}")
    r = instruction_ratio(runs)
    if r:
        lines.append(
            f"- Cortex-M4 (emulated): reference kernels run {r}x the instructions of CMSIS-NN "
            "per inference"
        )
    lines += [
        "- flash and RAM from `size -A` on the image (`arm-none-eabi-size` for the Cortex-M4); "
        "the model and arena shares from its symbol table, TFLM's (with CMSIS-NN) from the "
        "linker map; all code = flash minus model and test images (TFLM, main, C/C++ runtime). "
        "Instructions: QEMU `-icount shift=0` SysTick ticks x 40; only "
        "ratios mean anything (QEMU does not model a pipeline).",
        "",
    ]
    return "\n".join(lines)
