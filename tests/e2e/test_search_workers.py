"""A search killed and resumed, and one study shared by two workers: through the journal file,
and through a PostgreSQL server started here on loopback."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import search_helpers as H
from conftest import ROOT, run_cli

pytestmark = H.needs_tree


def test_killed_search_resumes_without_redoing_finished_trials(tmp_path):
    out, space = tmp_path / "s", H.space(tmp_path)
    args = H.args(
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
    assert sorted(H.trained_epochs(out).values()) == [3, 3]  # no epoch trained twice
    summary = json.loads((out / "pareto.json").read_text())
    assert summary["trained"] == 2 and summary["measured"] == 2
    assert "were cut off" in r.stderr


def test_two_workers_share_one_journal_and_train_each_candidate_once(tmp_path):
    out, space = tmp_path / "s", H.space(tmp_path)
    args = [
        sys.executable,
        "-m",
        "kdq_tf",
        *map(
            str,
            H.args(
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
    study = H.study(out)
    owners = [(t.number, t.user_attrs["pid"]) for t in study.trials]
    assert len({n for n, _ in owners}) == len(owners)  # each trial ran in one worker
    assert {p for _, p in owners} == {w.pid for w in workers}  # both took part
    assert sorted(H.trained_epochs(out).values()) == [1, 1]  # each candidate trained once


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

    space = H.space(tmp_path)
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
                    H.args(
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
