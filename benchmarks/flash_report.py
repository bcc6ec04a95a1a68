"""The tables, targets and plot of benchmarks/flash.py, from its results.

    python benchmarks/flash_report.py benchmarks/results/flash.json  # rewrite flash.md and the plot

Kept apart from the runs so that a report can be written again without training anything.
"""

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench import _save, portable, pyplot  # noqa: E402 - sibling scripts, importable once the folder is on the path
from kd_runs import mean_std  # noqa: E402

# What a user would read in the table.
LABELS = {
    "dense": "dense int8 (QAT)",
    "prune50": "pruned 50% (PQAT)",
    "prune75": "pruned 75% (PQAT)",
    "shrink50": "soft threshold 50% (PQAT)",
    "shrink75": "soft threshold 75% (PQAT)",
    "cluster16": "16 clusters (CQAT) + LUT",
    "cluster8": "8 clusters (CQAT) + LUT",
    "prune50+cluster16": "pruned 50% + 16 clusters (PCQAT) + LUT",
}
# Settings the variants inherit from the run that distilled the student.


def summarize(rows: dict) -> list[dict]:
    dense = rows["dense"]
    table = []
    for name, per_seed in rows.items():
        acc = [r["accuracy"] for r in per_seed]
        loss = [d["accuracy"] - r["accuracy"] for d, r in zip(dense, per_seed)]
        ratio = [r["flash_bytes"] / d["flash_bytes"] for d, r in zip(dense, per_seed)]
        table.append(
            {
                "variant": name,
                "label": LABELS[name],
                "accuracy": mean_std(acc),
                "loss_pts": 100 * float(np.mean(loss)),
                "flash_bytes": mean_std([r["flash_bytes"] for r in per_seed]),
                "flash_ratio": float(np.max(ratio)),
                "gzip_bytes": mean_std([r["gzip_bytes"] for r in per_seed]),
                "gzip_ratio": float(
                    np.mean([r["gzip_bytes"] / d["gzip_bytes"] for d, r in zip(dense, per_seed)])
                ),
                "arena_bytes": max(r["arena_bytes"] for r in per_seed),
                "int8_zeros": mean_std([r["int8_zeros"] for r in per_seed]),
                "max_unique_per_channel": max(r["max_unique_per_channel"] for r in per_seed),
                "bit_exact": None
                if per_seed[0]["bit_exact"] is None
                else (
                    f"{sum(r['bit_exact'] for r in per_seed)}/"
                    f"{sum(r['bit_exact_of'] for r in per_seed)}"
                ),
            }
        )
    return table


def checks(table: list[dict]) -> list[dict]:
    """The issue's targets, each with its measured figure."""
    by = {r["variant"]: r for r in table}
    out = []
    if "cluster16" in by:
        c = by["cluster16"]
        out += [
            {
                "target": (
                    "16 clusters + LUT: flash <= 0.6x of the plain int8 device model (worst seed)"
                ),
                "measured": round(c["flash_ratio"], 4),
                "holds": c["flash_ratio"] <= 0.6,
            },
            {
                "target": "16 clusters + LUT: <= 0.5 pt below plain int8 (mean of seeds)",
                "measured": round(c["loss_pts"], 2),
                "holds": c["loss_pts"] <= 0.5,
            },
            {
                "target": (
                    "16 clusters + LUT: bit-exact with the uncompressed clustered int8 on TFLM"
                ),
                "measured": c["bit_exact"],
                "holds": c["bit_exact"].split("/")[0] == c["bit_exact"].split("/")[1],
            },
        ]
    for s in ("50", "75"):
        if f"prune{s}" in by:
            out.append(
                {
                    "target": (
                        f"{s}% sparsity survives PQAT and int8 conversion "
                        "(zeros in the int8 kernels)"
                    ),
                    "measured": round(by[f"prune{s}"]["int8_zeros"]["mean"], 4),
                    "holds": by[f"prune{s}"]["int8_zeros"]["mean"] >= int(s) / 100 - 0.02,
                }
            )
    return out


def markdown(res: dict) -> str:
    s = res["settings"]
    lines = [
        f"# Flash below int8 ({res['name']})",
        "",
        f"{res['date']}, {res['machine']['cores']} cores, {res['wall_time_s'] / 60:.1f} min. "
        f"Students: {s['from'] or 'distilled here'}; {s['seeds']} seed(s); "
        f"structure fine-tuning {s['structure_epochs']} "
        f"epochs, QAT {s['qat_epochs']} epochs, teacher guiding throughout.",
        "",
        "Accuracy: the int8 .tflite on LiteRT, whole test split, mean ± std of seeds; "
        "a LUT-compressed model is bit-exact with it on the TFLM interpreter "
        "(last column, verify samples of every seed). "
        "Flash: the device flatbuffer "
        "(names and metadata stripped; LUT-compressed where it says so). "
        "Loss and ratios against the same seed's dense int8 model (flash: the worst seed).",
        "",
        "| variant | test accuracy | vs dense | flash bytes | x dense | gzip of .tflite | x dense "
        "| zeros in int8 kernels | max values per channel | TFLM arena | bit-exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["table"]:
        a = r["accuracy"]
        lines.append(
            f"| {r['label']} | {100 * a['mean']:.2f} ± {100 * a['std']:.2f}% | "
            f"{-r['loss_pts']:+.2f} pts | "
            f"{r['flash_bytes']['mean']:,.0f} | {r['flash_ratio']:.3f} | "
            f"{r['gzip_bytes']['mean']:,.0f} | "
            f"{r['gzip_ratio']:.3f} | {100 * r['int8_zeros']['mean']:.1f}% | "
            f"{r['max_unique_per_channel']} | "
            f"{r['arena_bytes']:,} | {r['bit_exact'] or '-'} |"
        )
    lines += ["", 'Targets (issue "Flash below int8"):', ""]
    lines += [
        f"- {'holds' if c['holds'] else 'MISSED'}: {c['target']}: {c['measured']}"
        for c in res["checks"]
    ]
    lines += [
        "",
        "Per seed (float: the distilled student's test accuracy before, and after the structure "
        "stage or the soft threshold, before QAT):",
        "",
        "| variant | seed | int8 | float before -> structured "
        "| flash bytes | gzip | zeros | shrink delta |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in (
        r["variant"] for r in res["table"]
    ):  # the JSON file sorts its keys; the table keeps the order
        per_seed = res["rows"][name]
        for seed, r in enumerate(per_seed):
            fs, delta = r["float_accuracy_structured"], r["shrink_delta"]
            lines.append(
                f"| {name} | {seed} | {100 * r['accuracy']:.2f}% | "
                f"{100 * r['float_accuracy_before']:.2f}% -> "
                f"{'-' if fs is None else f'{100 * fs:.2f}%'} | "
                f"{r['flash_bytes']:,} | {r['gzip_bytes']:,} | {100 * r['int8_zeros']:.1f}% | "
                f"{'-' if delta is None else format(delta, '.4g')} |"
            )
    fw = {k: v for k, v in res.get("firmware", {}).items() if isinstance(v, dict)}
    if fw:
        lines += [
            "",
            "Seed 0 as Cortex-M4 firmware "
            "(MPS2-AN386 under QEMU, CMSIS-NN kernels; flash and RAM of the "
            "whole image from `size`):",
            "",
            "| variant | bit-exact vs Python TFLM | flash B | model B | RAM B "
            "| instructions / inference |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in sorted(fw.items(), key=lambda kv: kv[0] != "dense"):
            m = r["memory"]
            lines.append(
                f"| {name} | {r['bit_exact']}/{r['samples']} | {m.get('flash_bytes', 0):,} | "
                f"{m.get('flash_model_bytes', 0):,} | {m.get('ram_bytes', 0):,} | "
                f"{r['instructions_per_inference'] or 0:,} |"
            )
    if res.get("firmware", {}).get("skipped"):
        lines += ["", f"Firmware rows skipped: {res['firmware']['skipped']}"]
    if res.get("huffman"):
        lines += ["", f"Huffman: {res['huffman']}"]
    if res.get("pruning_compression"):
        lines += ["", f"TFLM pruning compression (zeros to flash): {res['pruning_compression']}"]
    return "\n".join(lines) + "\n"


def plot(res: dict, out: Path) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in (
        (axes[0], "flash_bytes", "device flatbuffer bytes (LUT where applied)"),
        (axes[1], "gzip_bytes", "gzip -9 of the .tflite, bytes"),
    ):
        for r in res["table"]:
            ax.errorbar(
                r[key]["mean"] / 1024,
                100 * r["accuracy"]["mean"],
                yerr=100 * r["accuracy"]["std"],
                fmt="o",
                label=r["label"],
            )
        ax.set_xlabel(f"{title} / 1024")
    axes[0].set_ylabel("test accuracy % (int8, mean ± std of seeds)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    written = [_save(fig, out / f"{res['name']}_accuracy_vs_flash.png")]
    plt.close("all")
    return written


def write(res: dict, results: Path) -> str:
    """Writes <name>.json, <name>.md and the plot into `results`; returns the markdown."""
    from kdq_tf import files

    results.mkdir(parents=True, exist_ok=True)
    res["plots"] = plot(res, results)
    res = portable(res)
    files.write_json(results / f"{res['name']}.json", res)
    md = markdown(res)
    files.write_text(results / f"{res['name']}.md", md)
    return md


if __name__ == "__main__":
    path = Path(sys.argv[1])
    print(write(json.loads(path.read_text()), path.parent))
