"""Copies a benchmark's results into the README: the tables, and the "Does distillation help?" section.

    python benchmarks/readme_table.py [name]     # default: full
    python benchmarks/readme_table.py flash      # the "Smaller than int8" section (benchmarks/flash.py)

The README blocks are generated from benchmarks/results/<name>.json/.md; no figure in
them is typed by hand.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {"results": ("<!-- results:begin -->", "<!-- results:end -->"),
          "kd": ("<!-- kd:begin -->", "<!-- kd:end -->"),
          "flash": ("<!-- flash:begin -->", "<!-- flash:end -->")}


def kd_section(res: dict) -> str:
    """Plain statements, each computed from the results: where distillation helps and where it does not."""
    s, t = res["summary"], res["teacher"]["teacher"]
    by = {r["model"]: r["accuracy"] for r in s["table"]}
    d8, s8 = by["distilled + QAT, int8 .tflite"], by["scratch + QAT, int8 .tflite"]
    gain, noise = 100 * (d8["mean"] - s8["mean"]), 100 * (d8["std"] + s8["std"])
    n = d8["n"]
    verdict = ("helps" if gain > noise and gain > 0 else "hurts" if gain < -noise else
               "makes no difference larger than the seed-to-seed spread")
    lines = [f"On Fashion-MNIST with a {t['accuracy'] * 100:.2f}% teacher, distillation **{verdict}** for the "
             f"int8 student: distilled + QAT {100 * d8['mean']:.2f} ± {100 * d8['std']:.2f}% against "
             f"{100 * s8['mean']:.2f} ± {100 * s8['std']:.2f}% for the same student trained alone with the same "
             f"augmentation, epochs, schedule and QAT ({gain:+.2f} pts, mean of {n} seeds; the two standard "
             f"deviations add up to {noise:.2f} pts)."]
    k = res["kd_gain"]["rows"]
    if k:
        pairs = ", ".join(f"{r['teacher']} {100 * r['teacher_accuracy']:.2f}% -> {r['gain_pts']:+.2f}" for r in k)
        lines.append(f"KD gain against teacher accuracy (snapshots of one training run and the stored teachers, one seed, "
                     f"{res['kd_gain']['epochs']} epochs, scratch twin {100 * res['kd_gain']['scratch_accuracy']:.2f}%): "
                     f"{pairs} pts.")
    rows = res["guidance"]["rows"]
    lines.append("Guidance on a slice of " + f"{res['guidance']['samples']:,} images: " + "; ".join(
        f"{r['mode']} {100 * r['accuracy']:.2f}% at {r['epoch_s']:.1f} s/epoch" for r in rows) + ".")
    best = res["chosen"]
    views = best.get("views", res["settings"]["views"])
    lines.append(f"The validation sweep chose T={best['temperature']:g}, lambda={best['lam']:g} and "
                 + (f"{views} cached augmented views." if views else "cached logits without augmentation."))
    for name, tg in s["targets"].items():
        if not tg["holds"]:
            lines.append(f"Not reached: `{name}` ({json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in tg.items() if k != 'holds'})}).")
    return "\n\n".join(lines)


def flash_section(res: dict) -> str:
    """Plain statements from benchmarks/flash.py's results: what each way below int8 buys and costs."""
    by = {r["variant"]: r for r in res["table"]}
    n = by["dense"]["accuracy"]["n"]
    lines = []
    for name in ("cluster16", "cluster8", "prune50+cluster16"):
        if name in by:
            r = by[name]
            lines.append(f"{r['label']}: {r['flash_ratio']:.3f}x the flash of the plain int8 model (worst of {n} "
                         f"seeds), {-r['loss_pts']:+.2f} pts of test accuracy (mean), bit-exact on TFLM on "
                         f"{r['bit_exact']} samples.")
    for s in ("50", "75"):
        p, t = by.get(f"prune{s}"), by.get(f"shrink{s}")
        if p and t:
            lines.append(f"At {s}% sparsity, magnitude pruning keeps {100 * p['accuracy']['mean']:.2f}% and the soft "
                         f"threshold {100 * t['accuracy']['mean']:.2f}% ({100 * p['int8_zeros']['mean']:.1f}% and "
                         f"{100 * t['int8_zeros']['mean']:.1f}% zeros in the int8 kernels; gzip "
                         f"{p['gzip_ratio']:.3f}x and {t['gzip_ratio']:.3f}x of dense).")
    fw = {k: v for k, v in res.get("firmware", {}).items() if isinstance(v, dict)}
    if "dense" in fw and "cluster16" in fw:
        d, c = fw["dense"]["memory"], fw["cluster16"]["memory"]
        lines.append(f"As Cortex-M4 firmware (CMSIS-NN), the 16-cluster model saves "
                     f"{d['flash_model_bytes'] - c['flash_model_bytes']:,} B of model but the DECODE kernel adds "
                     f"{c['flash_tflm_bytes'] - d['flash_tflm_bytes']:,} B of TFLM code: the whole image goes from "
                     f"{d['flash_bytes']:,} to {c['flash_bytes']:,} B of flash, and RAM from {d['ram_bytes']:,} to "
                     f"{c['ram_bytes']:,} B (the arena holds the decoded tensors).")
    full = ROOT / "benchmarks" / "results" / "full.json"
    old = json.loads(full.read_text()).get("device", {}).get("device_model_bytes") if full.is_file() else None
    new = res["rows"]["dense"][0]["flash_bytes"]
    if old and old != new and res["settings"].get("from"):
        lines.append(f"The device flatbuffer now keeps one zero point per tensor (TFLM broadcasts it): the student "
                     f"that \"On the device\" above shows at {old:,} B is {new:,} B here (same layers, its own QAT "
                     "run); that table predates the change.")
    for c in res["checks"]:
        if not c["holds"]:
            lines.append(f"Not reached: {c['target']} (measured {c['measured']}).")
    return "\n\n".join(lines)


def replace_block(text: str, key: str, body: str, note: str) -> str:
    begin, end = BLOCKS[key]
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{note}\n\n{body}\n{end}{tail}"


def main(name: str = "full") -> None:
    md = (ROOT / "benchmarks" / "results" / f"{name}.md").read_text()
    res = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
    body = md.split("\n", 1)[1].strip()  # drop the title line; the README has its own heading
    body = body.replace("\n## ", "\n### ")  # sections nest under the README's "Results"
    readme = ROOT / "README.md"
    note = f"_Generated by `python benchmarks/readme_table.py {name}` from `benchmarks/results/{name}.json`._"
    if "checks" in res:  # benchmarks/flash.py
        readme.write_text(replace_block(readme.read_text(), "flash", f"{flash_section(res)}\n\n{body}", note))
        return
    text = replace_block(readme.read_text(), "results", body, note)
    text = replace_block(text, "kd", kd_section(res), note)
    readme.write_text(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
