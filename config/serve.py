"""`make run`: migrate, load the demo, then serve the product as production does: uvicorn (ASGI, so the live event
streams behave as in production) and one `qcluster`, in the foreground.

    python -m config.serve [--port 8000] [--host 0.0.0.0] [--no-demo]

Runs on the database in DATABASE_URL (`make run` starts its own PostgreSQL under var/pg, tests/pgserver.py).
SIGINT (Ctrl-C), SIGTERM or SIGHUP stop both processes with one SIGTERM each: uvicorn closes open streams within
5 s, the cluster finishes its current consumer slice (up to about 15 s). If either process exits on its own, the
other is stopped too and the exit code is non-zero. The children get SIGTERM if this process dies."""

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # in the child, before exec: SIGTERM when this supervisor dies (Linux)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def manage(*args: str, env: dict | None = None) -> None:
    subprocess.run([sys.executable, "manage.py", *args], check=True, env=env)


def prepare(demo: bool) -> None:
    manage("migrate", "--noinput")
    if demo:
        manage("recon_demo")
        manage(
            "shell",
            "--no-imports",
            "-c",
            "from django.contrib.auth import get_user_model as m; u = m().objects; "
            "u.filter(username='admin').exists() or u.create_superuser('admin', 'admin@example.com', 'admin')",
        )


def serve(host: str, port: int) -> int:
    """Starts uvicorn and qcluster (each in its own process group, so a terminal's Ctrl-C reaches them only
    through this supervisor, once) and waits; returns the exit code."""
    commands = {
        "qcluster": [sys.executable, "manage.py", "qcluster"],
        "uvicorn": [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            host,
            "--port",
            str(port),
            "--lifespan",
            "off",
            "--timeout-graceful-shutdown",
            "5",
        ],
    }
    procs = {
        name: subprocess.Popen(cmd, process_group=0, preexec_fn=_die_with_parent) for name, cmd in commands.items()
    }
    stopping = False

    def stop(signum=None, frame=None):
        nonlocal stopping
        if not stopping:
            stopping = True
            print(
                f"serve: stopping ({'signal ' + signal.Signals(signum).name if signum else 'a process exited'})",
                file=sys.stderr,
                flush=True,
            )
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    print(
        f"serve: console at http://127.0.0.1:{port}/admin/ (admin / admin; merchant operator demo_operator / demo)"
        f"; Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    failed = False
    while any(proc.poll() is None for proc in procs.values()):
        for name, proc in procs.items():
            if proc.poll() is not None and not stopping:
                print(f"serve: {name} exited with {proc.returncode}", file=sys.stderr, flush=True)
                failed = True
                stop()
        time.sleep(0.2)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--no-demo", action="store_true", help="migrate only: no demo data, no demo users")
    args = parser.parse_args()
    prepare(demo=not args.no_demo)
    return serve(args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
