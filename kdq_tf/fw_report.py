"""Device results -> `device_report.json`/`.md` in the firmware folder, and into export's report.

Each (target, kernels) run is kept under its own key, so the reference and CMSIS-NN runs
sit side by side and their instruction ratio can be given once both have run.
"""

from pathlib import Path

from kdq_tf import files


def ratio(runs: dict) -> float | None:
    """Instructions per inference, reference kernels over CMSIS-NN, on the Cortex-M4; None until both ran."""
    ref, nn = runs.get("cortex-m4/reference", {}), runs.get("cortex-m4/cmsis-nn", {})
    a, b = ref.get("instructions_per_inference"), nn.get("instructions_per_inference")
    return round(a / b, 2) if a and b else None


def markdown(runs: dict, heading: bool = True) -> str:
    from kdq_tf.report import markdown_table

    rows = []
    for key, r in runs.items():
        m = r["memory"]
        rows.append([key, f"{r['bit_exact']}/{r['samples']}", f"{100 * r['top1_agreement']:.0f}%",
                     f"{r['correct']}/{r['samples']}", m["flash_bytes"], m["flash_model_bytes"],
                     m.get("flash_tflm_bytes", ""), m["flash_code_and_tflm_bytes"], m["ram_bytes"], m["ram_arena_bytes"],
                     f"{r['arena_used_bytes']} / {r['arena_chosen_bytes']}", r.get("instructions_per_inference")])
    table = markdown_table(["target/kernels", "bit-exact vs Python TFLM", "top-1 agreement", "correct",
                            "flash bytes", "model", "TFLM", "all code", "RAM bytes", "arena (RAM)",
                            "arena used / chosen", "instructions per inference"], rows)
    lines = (["# kdq_tf firmware on the device", ""] if heading else []) + [table, ""]
    for key, r in runs.items():
        names = r.get("class_names") or []
        classes = ", ".join(f"{n}{'' if p == y else ' (label: ' + (names[y] if y < len(names) else str(y)) + ')'}"
                            for n, p, y in zip(r["predicted_names"], r["predicted"], r["labels"]))
        lines.append(f"- {key}: classes of the embedded test images, in order: {classes}")
    r = ratio(runs)
    if r:
        lines.append(f"- Cortex-M4 (emulated): reference kernels run {r}x the instructions of CMSIS-NN per inference")
    lines += ["- flash and RAM from `size -A` on the image (`arm-none-eabi-size` for the Cortex-M4); the model and "
              "arena shares from its symbol table, TFLM's (with CMSIS-NN) from the linker map; all code = flash minus "
              "model and test images (TFLM, main, C/C++ runtime). Instructions: QEMU `-icount shift=0` SysTick ticks x 40; only "
              "ratios mean anything (QEMU does not model a pipeline).", ""]
    return "\n".join(lines)


def record(fw_dir: str | Path, result: dict) -> str:
    """Adds `result` to the firmware folder's device report (and export's); returns the markdown."""
    from kdq_tf.fw_build import firmware_info

    fw_dir = Path(fw_dir)
    path = fw_dir / "device_report.json"
    runs = (files.read_json(path) or {}).get("runs", {})
    runs[f"{result['target']}/{result['kernels']}"] = result
    doc = {"runs": runs, "instruction_ratio_reference_over_cmsis_nn": ratio(runs)}
    md = markdown(runs)
    files.write_json(path, doc)
    files.write_text(fw_dir / "device_report.md", md)
    export_report = firmware_info(fw_dir).get("export_report")
    if export_report and Path(export_report).is_file():
        _update_export_report(Path(export_report), doc)
    return md


def _update_export_report(path: Path, device: dict) -> None:
    from kdq_tf.report import export_markdown

    report = files.read_json(path)
    report["device"] = device
    files.write_json(path, report)
    metrics = files.read_json(Path(report["run_dir"]) / "metrics.json") if report.get("run_dir") else {}
    files.write_text(path.with_suffix(".md"), export_markdown(report, metrics or {}))
