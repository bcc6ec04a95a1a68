"""Device results -> `device_report.json`/`.md` in the firmware folder, and into export's report
(the tables themselves are kdq_tf.report's).

Each (target, kernels) run is kept under its own key, so the reference and CMSIS-NN runs
sit side by side and their instruction ratio can be given once both have run.
"""

from pathlib import Path

from kdq_tf import files
from kdq_tf.device.build import firmware_info
from kdq_tf.report import device_table, export_markdown, instruction_ratio


def record(fw_dir: str | Path, result: dict) -> str:
    """Adds `result` to the firmware folder's device report (and export's); returns the markdown."""
    fw_dir = Path(fw_dir)
    path = fw_dir / "device_report.json"
    runs = (files.read_json(path) or {}).get("runs", {})
    runs[f"{result['target']}/{result['kernels']}"] = result
    doc = {"runs": runs, "instruction_ratio_reference_over_cmsis_nn": instruction_ratio(runs)}
    md = device_table(runs)
    files.write_json(path, doc)
    files.write_text(fw_dir / "device_report.md", md)
    add_to_export_report(fw_dir, "device", doc)
    return md


def add_to_export_report(fw_dir: Path, key: str, value: dict, merge: bool = False) -> None:
    """Sets `key` (merge: adds value's entries to it) in the report of the export that wrote
    `fw_dir`, and rewrites its markdown; nothing when the folder did not come from export."""
    path = firmware_info(fw_dir).get("export_report")
    if not path or not Path(path).is_file():
        return
    path = Path(path)
    report = files.read_json(path)
    if merge and isinstance(report.get(key), dict):
        value = {**report[key], **value}
    report[key] = value
    files.write_json(path, report)
    metrics = (
        files.read_json(Path(report["run_dir"]) / "metrics.json") if report.get("run_dir") else {}
    )
    files.write_text(path.with_suffix(".md"), export_markdown(report, metrics or {}))
