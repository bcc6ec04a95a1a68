"""Copies a benchmark's headline results into the README, between marker comments.

    python benchmarks/readme_table.py [name]   # default full: "Does distillation help?", "Results"
    python benchmarks/readme_table.py flash    # "Smaller than int8" (benchmarks/flash.py)
    python benchmarks/readme_table.py search   # "What fits my device?" (benchmarks/search.py)
    python benchmarks/readme_table.py device_zoo  # "On the device" (benchmarks/device.py --zoo)
    python benchmarks/readme_table.py kd_study  # "Does distillation help?" by size and soft loss

The README blocks are generated from benchmarks/results/<name>.json/.md; no figure in them is
typed by hand. They stay short: the long tables (settings, sweeps, guidance modes, per-seed
rows) live only in benchmarks/results/<name>.md, which each block links.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {
    "results": ("<!-- results:begin -->", "<!-- results:end -->"),
    "kd": ("<!-- kd:begin -->", "<!-- kd:end -->"),
    "flash": ("<!-- flash:begin -->", "<!-- flash:end -->"),
    "search": ("<!-- search:begin -->", "<!-- search:end -->"),
    "device": ("<!-- device:begin -->", "<!-- device:end -->"),
    "kd_study": ("<!-- kd_study:begin -->", "<!-- kd_study:end -->"),
}
# The sections of <name>.md that the README's "Results" block shows; the others stay in the file.
# (Its "On the device" table is one student on the M4; the README's device block has the zoo.)
HEADLINE_SECTIONS = ("Quality",)


def pct(x: float) -> str:
    """A share (0.9312) as the results files print it ("93.12")."""
    return f"{100 * x:.2f}"


def pct_ms(ms: dict) -> str:
    """A mean and std of shares, as the results files print them ("93.12 ± 0.19%")."""
    return f"{pct(ms['mean'])} ± {pct(ms['std'])}%"


def kd_section(res: dict) -> str:
    """Plain statements, each computed from the results: where distillation helps and where not."""
    s, t = res["summary"], res["teacher"]["teacher"]
    by = {r["model"]: r["accuracy"] for r in s["table"]}
    d8, s8 = by["distilled + QAT, int8 .tflite"], by["scratch + QAT, int8 .tflite"]
    gain, noise = 100 * (d8["mean"] - s8["mean"]), 100 * (d8["std"] + s8["std"])
    n = d8["n"]
    if gain > noise and gain > 0:
        verdict = "helps"
    elif gain < -noise:
        verdict = "hurts"
    else:
        verdict = "makes no difference larger than the seed-to-seed spread"
    lines = [
        f"On Fashion-MNIST with a {pct(t['accuracy'])}% teacher, distillation **{verdict}** for "
        f"the int8 student: distilled + QAT {pct(d8['mean'])} ± {pct(d8['std'])}% against "
        f"{pct(s8['mean'])} ± {pct(s8['std'])}% for the same student trained alone with the same "
        f"augmentation, epochs, schedule and QAT ({gain:+.2f} pts, mean of {n} seeds; the two "
        f"standard deviations add up to {noise:.2f} pts)."
    ]
    kg = res["kd_gain"]
    if kg["rows"]:
        pairs = ", ".join(
            f"{r['teacher']} {pct(r['teacher_accuracy'])}% -> {r['gain_pts']:+.2f}"
            for r in kg["rows"]
        )
        lines.append(
            "KD gain against teacher accuracy (snapshots of one training run and the stored "
            f"teachers, one seed, {kg['epochs']} epochs, scratch twin "
            f"{pct(kg['scratch_accuracy'])}%): {pairs} pts."
        )
    g = res["guidance"]
    lines.append(
        f"Guidance on a slice of {g['samples']:,} images: "
        + "; ".join(
            f"{r['mode']} {pct(r['accuracy'])}% at {r['epoch_s']:.1f} s/epoch" for r in g["rows"]
        )
        + "."
    )
    best = res["chosen"]
    views = best.get("views", res["settings"]["views"])
    lines.append(
        f"The validation sweep chose T={best['temperature']:g}, lambda={best['lam']:g} and "
        + (f"{views} cached augmented views." if views else "cached logits without augmentation.")
    )
    for name, tg in s["targets"].items():
        if not tg["holds"]:
            measured = {
                k: round(v, 4) if isinstance(v, float) else v for k, v in tg.items() if k != "holds"
            }
            lines.append(f"Not reached: `{name}` ({json.dumps(measured)}).")
    # two paragraphs at most: the README keeps to its 200 lines
    return "\n\n".join([lines[0], " ".join(lines[1:])] if lines[1:] else lines)


def headline(md: str) -> str:
    """The HEADLINE_SECTIONS of a results file, one heading level down (under the README's)."""
    sections = md.split("\n## ")[1:]  # [0] is the title and the settings line
    return "\n\n".join("### " + s.strip() for s in sections if s.startswith(HEADLINE_SECTIONS))


def flash_section(res: dict) -> str:
    """Plain statements from benchmarks/flash.py's results: what each way below int8 buys and
    costs."""
    by = {r["variant"]: r for r in res["table"]}
    n = by["dense"]["accuracy"]["n"]
    bullets, lines = [], []
    for name in ("cluster16", "cluster8", "prune50+cluster16"):
        if name in by:
            r = by[name]
            bullets.append(
                f"- {r['label']}: {r['flash_ratio']:.3f}x the flash of the plain int8 model (worst "
                f"of {n} seeds), {-r['loss_pts']:+.2f} pts of test accuracy (mean), bit-exact on "
                f"TFLM on {r['bit_exact']} samples."
            )
    p, t = by.get("prune50"), by.get("shrink50")  # 75% is in flash.md
    if p and t:
        lines.append(
            f"At 50% sparsity, magnitude pruning keeps {pct(p['accuracy']['mean'])}% and the "
            f"soft threshold {pct(t['accuracy']['mean'])}% "
            f"({100 * p['int8_zeros']['mean']:.1f}% and {100 * t['int8_zeros']['mean']:.1f}% "
            f"zeros in the int8 kernels; gzip {p['gzip_ratio']:.3f}x and "
            f"{t['gzip_ratio']:.3f}x of dense)."
        )
    lut = ROOT / "benchmarks" / "results" / "lut_device.json"
    runs = json.loads(lut.read_text())["runs"] if lut.is_file() else {}
    key = "small_cnn/cortex-m4/cmsis-nn"
    if key in runs:  # the whole image, from benchmarks/lut_device.py
        dec, f = runs[key]["lut_decode"], runs[key]["lut_fused"]
        lines.append(
            f"As Cortex-M4 firmware (CMSIS-NN), {key.split('/')[0]} with 16-cluster LUT "
            f"([benchmarks/results/lut_device.md](benchmarks/results/lut_device.md)): with "
            f"TFLM's DECODE, {dec['flash_vs_dense']:.3f}x the dense image's flash but "
            f"{dec['ram_vs_dense']:.2f}x its RAM; with the fused LUT convolution, "
            f"{f['flash_vs_dense']:.3f}x the flash ({100 * f['kept_of_model_saving']:.0f}% of "
            f"what LUT saves on the model), {f['ram_vs_dense']:.3f}x the RAM and "
            f"{f['instructions_vs_dense']:.2f}x the instructions, bit-exact "
            f"{f['bit_exact']}/{f['samples']}."
        )
    for c in res["checks"]:
        if not c["holds"]:
            lines.append(f"Not reached: {c['target']} (measured {c['measured']}).")
    return "\n".join(bullets) + ("\n\n" + " ".join(lines) if lines else "")


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def search_section(res: dict) -> str:
    """Per budget: what the search found and what it cost; the comparison with the zoo where the
    final phase has run; and, said plainly, what has not run yet."""
    lines = []
    searched = res.get("search") or {}
    for b, r in searched.items():
        lim = r["budget"]
        parts = []
        if lim.get("flash"):
            parts.append(f"flash <= {_kib(lim['flash'])}")
        if lim.get("ram"):
            parts.append(f"RAM <= {_kib(lim['ram'])}")
        if lim.get("instructions"):
            parts.append(f"<= {lim['instructions'] / 1e6:g} M instructions")
        limits = ", ".join(parts)
        # A search run with --rung ended as kdq_tf search does: its wall time holds the final
        # rung and the export, and its pick was chosen on the final schedule.
        rung = r.get("final_rung") or []
        what = f"{r['trials']} trials" + (
            f", a final rung of {len(rung)} and the pick's export" if r.get("chosen_export") else ""
        )
        from search import ran_on

        head = (
            f"Budget {b} ({limits}): {what} in {r['wall_time_s'] / 60:.0f} min on "
            f"{ran_on(r, res)} ({r['rejected']} rejected on their estimate, "
            f"{r['pruned']} pruned, {r['measured']} measured on the Cortex-M4, {r['fit']} fit)"
        )
        f = r.get("found")
        if f:
            g = r["found_figures"]
            instr = f", {g['instructions'] / 1e6:.2f} M instructions" if g["instructions"] else ""
            from search import picked_by_rung, rung_schedule  # the results' own script

            sched = f"final rung: {rung_schedule(r)}" if picked_by_rung(r) else "search schedule"
            head += (
                f"; its pick: `{f['key']}` with {r['found_kernels']} kernels, "
                f"{pct(r['found_val_accuracy'])}% validation accuracy (int8, {sched}), "
                f"flash {_kib(g['flash'])}, RAM {_kib(g['ram'])}{instr}, bit-exact."
            )
            e = r.get("chosen_export")
            if e:
                head += f" Its int8 test accuracy, scored once: {pct(e['test_accuracy_int8'])}%."
        else:
            head += "; nothing fit."
        lines.append(head)
        c = (res.get("comparison") or {}).get(b) or {}
        v = c.get("verdict")
        if v:
            rows = {row["name"]: row for row in c["rows"]}

            def acc(name):
                t = rows[name]["test_accuracy"]
                shown = name.removeprefix("found:")
                return f"`{shown}` {pct_ms(t)} (n={t['n']})"

            versus = (
                f"the found {acc(c['found'])}, which is the best zoo student that fits"
                if c["found"] == c["best_zoo"]
                else f"the found {acc(c['found'])} against the best zoo student that fits, "
                f"{acc(c['best_zoo'])}: {v['gain_pts']:+.2f} pts "
                f"(two stds {v['two_stds_pts']:.2f})"
            )
            lines[-1] += (  # the budget's paragraph: the README keeps to 200 lines
                f" Final schedule, int8 test accuracy over seeds: {versus}"
                + (
                    "."
                    if c["complete"]
                    else "; not final: the phase has not run every seed yet (`--resume`)."
                )
            )
    missing = [f"the search at budget {b}" for b in ("A", "B", "C") if b not in searched]
    if not any((res.get("comparison") or {}).get(b, {}).get("verdict") for b in searched):
        missing.append("the comparison with the zoo (`benchmarks/search.py --phase final`)")
    if missing:
        lines.append(f"Not run yet: {'; '.join(missing)}.")
    return "\n\n".join(lines)


def device_section(res: dict, hw_student: dict | None = None) -> str:
    """One row per zoo student: instructions per inference on each core with CMSIS-NN (the M4
    also with the reference kernels), the M4 image's flash and RAM, and whether every build was
    bit-exact; then the profile's one-line summary."""
    cores = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55")
    rows = [
        "| student | MACs | M4 reference | M4 | M7 | M33 | M55 (Helium) | M4 flash | M4 RAM "
        "| bit-exact |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in res["zoo"].items():
        r = e["runs"]
        if len(r) < 2 * len(cores):
            continue
        m4 = r["cortex-m4/cmsis-nn"]
        exact = all(
            v["bit_exact"].split("/")[0] == v["bit_exact"].split("/")[1] for v in r.values()
        )
        cells = [f"{r['cortex-m4/reference']['instructions'] / 1e6:.2f} M"] + [
            f"{r[f'{c}/cmsis-nn']['instructions'] / 1e6:.2f} M" for c in cores
        ]
        rows.append(
            f"| {name} | {e['macs'] / 1e6:.2f} M | {' | '.join(cells)} | {_kib(m4['flash'])} | "
            f"{_kib(m4['ram'])} | {'all' if exact else 'NOT all'} |"
        )
    p = res.get("profile")
    tail = []
    if p:
        top = max(p["operators"], key=lambda o: o["instructions"])
        per_mac = f", {top['instructions_per_mac']} per MAC" if top["instructions_per_mac"] else ""
        tail.append(
            f"Per operator ({p['model']}, Cortex-M4, CMSIS-NN): the operators add up to "
            f"{100 * p['operators_share']:.1f}% of the "
            f"{p['instructions_per_inference'] / 1e6:.2f} M "
            f"instructions of an inference; the largest is #{top['index']} {top['op']} "
            f"({100 * (top['share'] or 0):.1f}%{per_mac}); table and chart: "
            f"[benchmarks/results/profile_{p['model']}.md](benchmarks/results/profile_{p['model']}.md)."
        )
    hw = hw_sentence(hw_student) if hw_student else None
    if hw:  # the same paragraph: the README keeps to its 200 lines
        tail = [" ".join([*tail, hw])]
    return "\n".join(rows) + ("\n\n" + "\n".join(tail) if tail else "")


def hw_sentence(hw: dict) -> str | None:
    """benchmarks/hw_student.py's result in a sentence: the chosen student's instructions and
    its int8 test accuracy against small_cnn's, and on the confirmation's fresh seeds."""
    fin, name = hw.get("final"), hw.get("chosen")
    if not fin or fin.get("student") != name:
        return None

    def acc(t: dict) -> str:  # hw_student.py's stats of a student's test accuracy
        return f"{pct_ms(t)} (n={t['n']})"

    instr = {k.split("/")[0]: r["image"]["instructions"] for k, r in hw["runs"].items()}
    text = (
        f"A hardware-aware student, {name}, chosen on validation among candidates built by the "
        f"profile's rules, takes {instr[name] / 1e6:.2f} M instructions on the M4 with CMSIS-NN "
        f"({instr[name] / instr['small_cnn']:.2f}x small_cnn's) at {acc(fin['test'][name])} int8 "
        f"test accuracy against small_cnn's {acc(fin['test']['small_cnn'])} on the same schedule "
        f"({fin['gap_pts']:+.2f} pt)"
    )
    conf = hw.get("confirm")
    if conf and conf.get("student") == name:
        seeds = conf["seeds"]
        text += (
            f"; on fresh seeds {seeds[0]}-{seeds[-1]}, which no choice read: "
            f"{acc(conf['test'][name])} against {acc(conf['test']['small_cnn'])} "
            f"({conf['gap_pts']:+.2f} pt)"
        )
    return text + ": [benchmarks/results/hw_student.md](benchmarks/results/hw_student.md)."


# kd_study's "target_met": None until every seed is in
TARGET_VERDICT = {True: "met", False: "not met"}
# The asymmetry a reader of the KD gain at K cached views needs to know.
TWIN_VIEWS = (
    "The scratch twin trains on fresh draws of the views' augmentation every epoch, the "
    "distilled student on the {k} cached views (the teacher's logits exist for those only)."
)


def kd_study_section(res: dict) -> str:
    """benchmarks/kd_study.py's tables: the KD gain at each student size, the soft losses on
    small_cnn, and the issue's targets; a row with fewer seeds than the study runs says so."""
    s, summ, seeds = res["schedule"], res.get("summary", {}), res.get("seeds", 3)

    def acc(ms: dict) -> str:
        if ms["n"] >= seeds:
            return pct_ms(ms)
        return (pct_ms(ms) if ms["n"] > 1 else f"{pct(ms['mean'])}%") + (
            f" (n={ms['n']} of {seeds}, not final)"
        )

    lines = [
        "| student | params | scratch + QAT | distilled + QAT | KD gain | two stds |",
        "|---|---|---|---|---|---|",
    ]
    for r in summ.get("sizes", []):
        verdict = ""  # beats the noise, or one seed (the last column says so)
        if r["gain_pts"] <= 0:
            verdict = " (no gain)"
        elif r["beats_noise"] is False:
            verdict = " (within the noise)"
        noise = "one seed" if r["beats_noise"] is None else f"{r['two_stds_pts']:.2f} pt"
        lines.append(
            f"| {r['student']} | {r['params']:,} | {acc(r['scratch_int8'])} | "
            f"{acc(r['distilled_int8'])} | {r['gain_pts']:+.2f} pt{verdict} | {noise} |"
        )
    if not summ.get("sizes"):
        lines.append("| (no student has finished yet) | | | | | |")
    where = "the schedule chosen on validation" if res.get("chosen") else "make bench's schedule"
    tail = [
        f"Int8 test accuracy on LiteRT, {seeds} seeds, each student distilled from the same "
        f"teacher and trained alone ({where}: {s['epochs']} + {s['qat_epochs']} QAT "
        f"epochs, T {s['temperature']:g}, lambda {s['lam']:g}, {s['views']} cached views; "
        "[plot](benchmarks/results/kd_study_sizes.png))."
    ]
    if s["views"]:
        tail.append(TWIN_VIEWS.format(k=s["views"]))
    if summ.get("losses"):
        tail.append(
            "Soft loss on small_cnn: "
            + ", ".join(
                f"{r['loss'].upper()} {acc(r['distilled_int8'])}"
                + (
                    ""
                    if r["loss"] == "kl" or r["vs_kl_pts"] is None
                    else f" ({r['vs_kl_pts']:+.2f} pt)"
                )
                for r in summ["losses"]
            )
            + "."
        )
    targets = [r for r in summ.get("sizes", []) if "target" in r]
    if targets:
        tail.append(
            "Targets (int8 test, mean of 3 seeds): "
            + "; ".join(
                f"{r['student']} {100 * r['target']:.1f}% "
                + (
                    f"{TARGET_VERDICT[r['target_met']]} ({pct(r['distilled_int8']['mean'])}%)"
                    if r["target_met"] is not None
                    else f"not decided yet ({pct(r['distilled_int8']['mean'])}% so far, "
                    f"{r['distilled_int8']['n']} of {seeds} seeds)"
                )
                for r in targets
            )
            + "."
        )
    return "\n".join(lines) + "\n\n" + " ".join(tail)


def replace_block(text: str, key: str, body: str, note: str) -> str:
    begin, end = BLOCKS[key]
    if begin not in text or end not in text:
        raise SystemExit(f"README.md has no {begin} ... {end} block: add one where it goes")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{note}\n\n{body}\n{end}{tail}"


def main(name: str = "full") -> None:
    results = ROOT / "benchmarks" / "results"
    md = (results / f"{name}.md").read_text()
    res = json.loads((results / f"{name}.json").read_text())
    readme = ROOT / "README.md"
    # README-relative link: every table the block leaves out is in the results file.
    note = (
        f"_Generated by `python benchmarks/readme_table.py {name}` from "
        f"`benchmarks/results/{name}.json`; all tables: "
        f"[benchmarks/results/{name}.md](benchmarks/results/{name}.md)._"
    )
    if name == "device_zoo":  # with benchmarks/hw_student.py's student, where it has run
        hw_path = results / "hw_student.json"
        hw = json.loads(hw_path.read_text()) if hw_path.is_file() else None
        if hw and hw_sentence(hw):
            note = note.replace("`;", "` and `benchmarks/results/hw_student.json`;", 1)
        body = device_section(res, hw)
        readme.write_text(replace_block(readme.read_text(), "device", body, note))
        return
    if name == "kd_study":
        body = kd_study_section(res)
        readme.write_text(replace_block(readme.read_text(), "kd_study", body, note))
        return
    if name == "search":
        readme.write_text(replace_block(readme.read_text(), "search", search_section(res), note))
        return
    if "checks" in res:  # benchmarks/flash.py, and benchmarks/lut_device.py for the image
        note = note.replace("`;", "` and `benchmarks/results/lut_device.json`;", 1)
        readme.write_text(replace_block(readme.read_text(), "flash", flash_section(res), note))
        return
    text = replace_block(readme.read_text(), "results", headline(md), note)
    text = replace_block(text, "kd", kd_section(res), note)
    readme.write_text(text)


if __name__ == "__main__":
    main(*sys.argv[1:])
