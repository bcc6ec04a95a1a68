"""`kdq_tf search` end to end on a slice of Fashion-MNIST, from the stored teacher logits, with
every candidate measured on the emulated Cortex-M4 (needs a TFLM tree: $TFLM_DIR)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

LOGITS = ROOT / "benchmarks" / "teachers" / "fashion_mnist_fused" / "logits.npz"
pytestmark = pytest.mark.skipif(
    not os.environ.get("TFLM_DIR"), reason="needs a TFLite-Micro tree in $TFLM_DIR"
)
SPACE = """
[space]
width = [0.5]
blocks = [3]
block = ["plain", "separable"]
kernel = [3]
stride2 = [[1, 2]]
compression = {compression}
kernels = ["cmsis-nn"]
"""


def _space(tmp_path, compression='["none"]') -> Path:
    p = tmp_path / "space.toml"
    p.write_text(SPACE.format(compression=compression))
    return p


def _args(tmp_path, out, space, *extra):
    return [
        "search",
        "--teacher-logits",
        LOGITS,
        "--space",
        space,
        "--limit",
        "300",
        "--epochs",
        "1",
        "--out",
        out,
        *extra,
    ]


def _study(out: Path):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(out / "study.journal")))
    return optuna.load_study(study_name="kdq_tf_search", storage=storage)


def _trained_epochs(out: Path) -> dict[str, int]:
    """Distillation epochs each candidate folder ran (its history CSV has one row per epoch)."""
    return {
        p.parents[1].name: len(p.read_text().splitlines()) - 1
        for p in out.glob("trials/*/run/distill_history.csv")
    }


def test_tiny_search_measures_every_candidate_and_exports_the_chosen(tmp_path):
    out = tmp_path / "s"
    space = _space(tmp_path, '["none", "lut16"]')
    r = run_cli(
        *_args(
            tmp_path,
            out,
            space,
            "--flash",
            "192KiB",
            "--ram",
            "64KiB",
            "--trials",
            "3",
            "--pruner",
            "none",
        )
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "pareto.json").read_text())
    assert summary["trained"] == 3 and summary["measured"] == 3
    recs = json.loads((out / "trials.json").read_text())
    for rec in recs:  # every candidate: measured on its Cortex-M4 image, bit-exact
        img = rec["images"]["cmsis-nn"]
        assert img["bit_exact"] == "10/10"
        assert rec["fits"] == (img["flash"] <= 192 * 1024 and img["ram"] <= 64 * 1024)
        assert rec["figures"]["flash"] > rec["device_model_bytes"]  # the image holds the model
        # the estimate is a lower bound of what was measured
        assert rec["estimated"]["flash"] <= img["flash"] and rec["estimated"]["ram"] <= img["ram"]
    lut = [r for r in recs if r["candidate"]["compression"] == "lut16"]
    assert lut and lut[0]["compressed"]["bytes"] == lut[0]["device_model_bytes"]
    chosen = summary["chosen"]
    assert chosen["val_accuracy"] == max(r["val_accuracy"] for r in recs if r["fits"])
    ex = summary["chosen_export"]
    assert ex["bit_exact"] == "10/10" and (out / ex["firmware"] / "Makefile").is_file()
    assert not Path(chosen["run_dir"]).is_absolute()
    assert "Pareto front" in (out / "pareto.md").read_text()
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # One progress line per trial, with its figures.
    assert sum("val int8" in ln and "flash" in ln for ln in r.stderr.splitlines()) == 3
    study = _study(out)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 3


def test_a_budget_nothing_meets_exits_1_with_the_closest(tmp_path):
    out = tmp_path / "s"
    r = run_cli(*_args(tmp_path, out, _space(tmp_path), "--flash", "8KiB", "--trials", "2"))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "no candidate fits flash <= 8.0 KiB" in r.stdout
    lines = [ln for ln in r.stdout.splitlines() if "flash over by" in ln]
    assert len(lines) == 2
    # The first candidate's weights fit, so it trains and its image is measured; that image
    # tells what the firmware adds, and the second candidate is then rejected on its estimate
    # without training.
    assert sum("(measured)" in ln for ln in lines) == 1
    assert sum("(estimated)" in ln for ln in lines) == 1
    assert len(_trained_epochs(out)) == 1
    assert not (out / "chosen").exists()


def test_killed_search_resumes_without_redoing_finished_trials(tmp_path):
    out, space = tmp_path / "s", _space(tmp_path)
    args = _args(
        tmp_path,
        out,
        space,
        "--flash",
        "192KiB",
        "--trials",
        "2",
        "--pruner",
        "none",
        "--epochs",
        "3",
        "--no-export",
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdq_tf", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:  # kill it once the first trial is recorded and the second is training
        deadline = time.time() + 400
        while time.time() < deadline:
            first = list(out.glob("trials/*/record.json"))
            histories = list(out.glob("trials/*/run/distill_history.csv"))
            if first and len(histories) == 2:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the search did not reach its second trial")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = first[0]
    stamp = done.stat().st_mtime_ns
    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert done.stat().st_mtime_ns == stamp  # the finished trial was not run again
    assert sorted(_trained_epochs(out).values()) == [3, 3]  # no epoch trained twice
    summary = json.loads((out / "pareto.json").read_text())
    assert summary["trained"] == 2 and summary["measured"] == 2
    assert "were cut off" in r.stderr


def test_two_workers_share_one_journal_and_train_each_candidate_once(tmp_path):
    out, space = tmp_path / "s", _space(tmp_path)
    args = [
        sys.executable,
        "-m",
        "kdq_tf",
        *map(
            str,
            _args(
                tmp_path,
                out,
                space,
                "--flash",
                "192KiB",
                "--trials",
                "2",
                "--pruner",
                "none",
                "--no-export",
                "--resume",
            ),
        ),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    workers = [
        subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outs]
    study = _study(out)
    owners = [(t.number, t.user_attrs["pid"]) for t in study.trials]
    assert len({n for n, _ in owners}) == len(owners)  # each trial ran in one worker
    assert {p for _, p in owners} == {w.pid for w in workers}  # both took part
    assert sorted(_trained_epochs(out).values()) == [1, 1]  # each candidate trained once


def _pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").is_file() and (d / "postgres").is_file():
            return d
    return None


@pytest.fixture
def postgres_url():
    """A PostgreSQL server from Debian's package, on loopback, for the length of one test."""
    import shutil
    import socket
    import tempfile

    pytest.importorskip(
        "psycopg2", reason="psycopg2 is not installed (pip install psycopg2-binary)"
    )
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    # The server refuses to run as root: as root, it runs as Debian's postgres user.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    base = Path(tempfile.mkdtemp(prefix="kdq_pg_"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if as_user:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init = subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "kdq"],
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
    server = subprocess.Popen(
        [
            *as_user,
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(sock),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        import psycopg2

        deadline = time.time() + 30
        while True:
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=port, user="kdq", dbname="postgres")
                break
            except psycopg2.OperationalError as e:
                if time.time() > deadline or server.poll() is not None:
                    pytest.skip(f"the PostgreSQL server did not start: {str(e).strip()[:200]}")
                time.sleep(0.3)
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE search")
        conn.close()
        yield f"postgresql+psycopg2://kdq@127.0.0.1:{port}/search"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path, postgres_url):
    import optuna

    space = _space(tmp_path)
    outs = [tmp_path / "a", tmp_path / "b"]  # two machines' folders, one database
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kdq_tf",
                *map(
                    str,
                    _args(
                        tmp_path,
                        out,
                        space,
                        "--flash",
                        "192KiB",
                        "--trials",
                        "2",
                        "--pruner",
                        "none",
                        "--no-export",
                        "--storage",
                        postgres_url,
                        "--seed",
                        str(i),
                    ),
                ),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, out in enumerate(outs)
    ]
    res = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [r[1][-2000:] for r in res]
    study = optuna.load_study(study_name="kdq_tf_search", storage=postgres_url)
    assert {t.user_attrs["pid"] for t in study.trials} <= {w.pid for w in workers}
    keys = [t.user_attrs["key"] for t in study.trials if t.state.name == "COMPLETE"]
    assert set(keys) == {"plain-w0.5-b3-k3-s1-2-none", "sep-w0.5-b3-k3-s1-2-none"}
