"""What a search found: the Pareto front, the chosen model, the closest misses, and the plot."""

from pathlib import Path

from kdq_tf.search.budget import Budget, fmt_bytes

# Lower is better for the device figures, higher for accuracy.
_AXES = (("val_accuracy", -1), ("flash", 1), ("instructions", 1))


def _point(r: dict) -> tuple:
    f = r["figures"]
    return (-r["val_accuracy"], f["flash"], f["instructions"] or 0)


def ranked(measured: list[dict]) -> list[dict]:
    """The records whose measured image fits, bit-exact, most accurate (validation, int8)
    first; ties go to the smaller flash, then the fewer instructions."""
    return sorted((r for r in measured if r.get("fits")), key=_point)


def choose(measured: list[dict]) -> dict | None:
    """The first of `ranked`: the model the search ships."""
    fitting = ranked(measured)
    return fitting[0] if fitting else None


def pareto(measured: list[dict]) -> list[dict]:
    """The fitting trials no other fitting trial beats on all of accuracy, flash and
    instructions, most accurate first."""
    pts = [r for r in measured if r.get("fits")]
    keep = []
    for r in pts:
        p = _point(r)
        dominated = any(all(a <= b for a, b in zip(_point(o), p)) and _point(o) != p for o in pts)
        if not dominated:
            keep.append(row(r))
    return sorted(keep, key=lambda row: -row["val_accuracy"])


def row(r: dict) -> dict:
    """A measured record as one row of the front's tables."""
    return {
        "trial": r["trial"],
        "candidate": r["candidate"]["key"],
        "kernels": r["kernels"],
        "val_accuracy": r["val_accuracy"],
        **r["figures"],
        "model_bytes": r["device_model_bytes"],
        "bit_exact": r["bit_exact"],
    }


def closest(recs: list[dict], budget: Budget, n: int = 3) -> list[dict]:
    """When nothing fits: the candidates that missed by the least (the sum of their relative
    excesses), measured ones by their image, rejected ones by their estimate."""
    rows = []
    for r in recs:
        figs = r.get("figures") or r.get("estimated")
        if not figs or r["outcome"] in ("pruned", "failed"):
            continue
        over = {k: v for k, v in budget.misses(figs).items() if v > 0}
        if r["outcome"] == "measured" and not r["images"][r["kernels"]]["exact"]:
            over["bit_exact"] = r["bit_exact"]
        rows.append(
            {
                "trial": r["trial"],
                "candidate": r["candidate"]["key"],
                "measured": r["outcome"] == "measured",
                "over_by": over,
                "excess": round(sum(max(0.0, v) for v in budget.constraints(figs)), 4),
            }
        )
    return sorted(rows, key=lambda row: row["excess"])[:n]


def _fmt(name: str, v) -> str:
    if v is None:
        return "-"
    return f"{v / 1e6:.2f} M" if name == "instructions" else fmt_bytes(v)


def miss_line(row: dict) -> str:
    parts = [
        f"{k} over by {_fmt(k, v)}" if k != "bit_exact" else f"bit-exact only {v}"
        for k, v in row["over_by"].items()
    ]
    how = "measured" if row["measured"] else "estimated"
    return f"trial {row['trial']} {row['candidate']} ({how}): {', '.join(parts)}"


def markdown(summary: dict, budget: Budget) -> str:
    lines = [
        "# Search",
        "",
        f"Budget: {budget.describe()}.",
        f"Trials: {summary['trials']} ({summary['rejected_before_training']} rejected on their "
        f"estimate before training, {summary['pruned']} pruned, {summary['measured']} measured "
        f"on the firmware, {summary['fit']} fit). Wall time {summary['wall_time_s']:.0f} s.",
        "",
    ]
    if summary["pareto"]:
        lines += [
            "## Pareto front of the candidates that fit",
            "",
            "Validation accuracy of the int8 model (LiteRT); the image's flash and RAM; "
            "instructions per inference under QEMU.",
            "",
            "| trial | candidate | kernels | val acc (int8) | flash | RAM | instructions | "
            "model | bit-exact |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in summary["pareto"]:
            lines.append(
                f"| {r['trial']} | `{r['candidate']}` | {r['kernels']} | "
                f"{100 * r['val_accuracy']:.2f}% | {fmt_bytes(r['flash'])} | {fmt_bytes(r['ram'])} "
                f"| {_fmt('instructions', r['instructions'])} | {fmt_bytes(r['model_bytes'])} | "
                f"{r['bit_exact']} |"
            )
    if summary.get("final_rung"):
        lines += [
            "",
            "## Final rung: the best fitting candidates on the long schedule",
            "",
            "| candidate | kernels | val acc (int8), search | val acc (int8), final | flash | "
            "RAM | instructions | fits |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in summary["final_rung"]:
            lines.append(
                f"| `{r['candidate']}` | {r['kernels']} | {100 * r['search_val_accuracy']:.2f}% "
                f"| {100 * r['val_accuracy']:.2f}% | {fmt_bytes(r['flash'])} | "
                f"{fmt_bytes(r['ram'])} | {_fmt('instructions', r['instructions'])} | "
                f"{'yes' if r['fits'] else 'no'} |"
            )
    c = summary["chosen"]
    if c:
        lines += [
            "",
            f"**Chosen:** trial {c['trial']}, `{c['candidate']['key']}` with "
            f"{c['kernels']} kernels.",
        ]
        lines += image_parts(c["images"][c["kernels"]])
        ex = summary.get("chosen_export")
        if ex:
            lines.append(
                f"Test accuracy (int8, scored once): {100 * ex['test_accuracy_int8']:.2f}%; "
                f"firmware in `{ex['firmware']}`, bit-exact {ex['bit_exact']}."
            )
    else:
        lines += ["", "**No candidate fits the budget.** The closest:", ""]
        lines += [f"- {miss_line(r)}" for r in summary["closest"] or []]
    return "\n".join(lines) + "\n"


def image_parts(img: dict) -> list[str]:
    """The chosen image's flash by part: what a user weighs when the budget is tight."""
    tflm, decode = img.get("tflm"), img.get("decode") or 0
    if tflm is None:
        return []
    rest = img["flash"] - img["model"] - tflm
    return [
        "",
        "| image part | flash |",
        "|---|---|",
        f"| model (device flatbuffer) | {fmt_bytes(img['model'])} |",
        f"| TFLite-Micro kernels and interpreter | {fmt_bytes(tflm - decode)} |",
        f"| DECODE (LUT) | {fmt_bytes(decode)} |",
        f"| the rest (application, C/C++ runtime, one input) | {fmt_bytes(rest)} |",
        f"| **whole image** | **{fmt_bytes(img['flash'])}** |",
        "",
        f"RAM {fmt_bytes(img['ram'])}: tensor arena {fmt_bytes(img['arena'])} (the smallest the "
        f"target runs the model in), the rest {fmt_bytes(img['ram'] - img['arena'])}.",
    ]


def plot(measured: list[dict], budget: Budget, path: Path) -> Path | None:
    """Accuracy against flash, coloured by instructions, with the budget's flash line."""
    if not measured:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdq_tf import files

    fig, ax = plt.subplots(figsize=(7, 4.5))
    flash = [r["figures"]["flash"] / 1024 for r in measured]
    acc = [100 * r["val_accuracy"] for r in measured]
    instr = [(r["figures"]["instructions"] or 0) / 1e6 for r in measured]
    sc = ax.scatter(
        flash,
        acc,
        c=instr,
        cmap="viridis",
        marker="o",
        edgecolors=["k" if r.get("fits") else "r" for r in measured],
    )
    fig.colorbar(sc, ax=ax, label="M instructions per inference")
    if budget.flash:
        ax.axvline(budget.flash / 1024, color="r", linestyle="--", label="flash budget")
        ax.legend(loc="lower right")
    ax.set_xlabel("image flash (KiB)")
    ax.set_ylabel("validation accuracy, int8 (%)")
    ax.set_title(f"Search: {budget.describe()} (red edge: over budget)", fontsize=9)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    files.write_bytes(path, buf.getvalue())
    return path
