"""A throwaway PostgreSQL server for tests and benchmarks.

    python -m tests.pgserver [--durable] -- COMMAND ...

initdb into a temporary directory, start on a random free port, export DATABASE_URL to COMMAND, stop and
delete the server afterwards (COMMAND gets DATABASE_URL, PGBINDIR and PGDATA). PostgreSQL refuses to run as root, so as root the server runs as the
`postgres` user. `--durable` keeps fsync on (benchmarks, with the usual write-heavy settings: max_wal_size 4GB,
random_page_cost 1.1); tests run with fsync off."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def find_bindir() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if candidates:
        return candidates[-1]
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    sys.exit("PostgreSQL is not installed (no initdb found): apt-get install -y postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Server:
    def __init__(self, durable: bool = False):
        self.bindir = find_bindir()
        self.durable = durable
        self.port = free_port()
        self.root = tempfile.mkdtemp(prefix="recon-pg-")
        self.data = os.path.join(self.root, "data")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/recon"

    def start(self) -> "Server":
        run = lambda *a: subprocess.run(as_server_user(list(a)), check=True, stdout=subprocess.DEVNULL)  # noqa: E731
        run(f"{self.bindir}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--locale=C.UTF-8" if os.path.exists("/usr/lib/locale/C.utf8") else "--locale=C")
        opts = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={self.root}",
                "-c max_connections=300", "-c shared_buffers=256MB", "-c log_min_messages=warning"]
        if not self.durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        else:  # the usual settings of a write-heavy server on SSD (README, "Benchmarks"); fsync stays on
            opts += ["-c max_wal_size=4GB", "-c random_page_cost=1.1", "-c effective_cache_size=4GB"]
        run(f"{self.bindir}/pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "server.log"), "-w",
            "-o", " ".join(opts), "start")
        for _ in range(100):
            if subprocess.run([f"{self.bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                              stdout=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run([f"{self.bindir}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q",
                        "-c", "CREATE DATABASE recon"], check=True)
        return self

    def stop(self) -> None:
        subprocess.run(as_server_user([f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str]) -> int:
    durable = "--durable" in argv
    if "--" not in argv:
        sys.exit(__doc__)
    cmd = argv[argv.index("--") + 1:]
    server = Server(durable=durable).start()
    print(f"pgserver: PostgreSQL on {server.url} (fsync {'on' if durable else 'off'})", flush=True)
    # PGDATA lets the reliability suite restart this server mid-run (tests/reliability).
    env = dict(os.environ, DATABASE_URL=server.url, PGBINDIR=server.bindir, PGDATA=server.data)
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
