"""Shared fixtures. Tests run on PostgreSQL only (`make test` starts a throwaway server)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TRACKER_TASK_MODULES", "tests.tracker.handlers")

# Hypothesis profiles: "ci" (the default, `make test`) and "fast" (`make test-fast`, HYPOTHESIS_PROFILE=fast).
# Database-backed property tests share a test's transaction, hence the function-scoped-fixture check is off.
_PROFILE = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}
hypothesis_settings.register_profile("ci", max_examples=100, **_PROFILE)
hypothesis_settings.register_profile("fast", max_examples=10, **_PROFILE)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        pytest.exit("Tests need PostgreSQL: run `make test` (it starts one) or set DATABASE_URL.", returncode=2)


def pytest_sessionstart(session):
    """Registers the tests' task types and workflows in this process (pytest-django set Django up before this
    module set TRACKER_TASK_MODULES, so TrackerConfig.ready did not see it; child processes get them through
    TRACKER_TASK_MODULES and JOBS_MODULES)."""
    from django.conf import settings

    from jobs import registry as job_registry
    from tracker import registry

    if "tests.tracker.handlers" not in settings.TRACKER["TASK_MODULES"]:
        registry.register_modules(["tests.tracker.handlers"])
    if "tests.jobs.workflow_defs" not in job_registry.modules_from_env():
        job_registry.register_modules(["tests.jobs.workflow_defs"])


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("staff", password="pw", is_staff=True, is_superuser=True)


@pytest.fixture
def plain_user(django_user_model):
    return django_user_model.objects.create_user("plain", password="pw")


def client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def staff_api(staff_user):
    return client_for(staff_user)


@pytest.fixture
def plain_api(plain_user):
    return client_for(plain_user)


@pytest.fixture
def anon_api():
    return APIClient()


def database_url() -> str:
    """URL of the database the test session is using (the test database), for child processes."""
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


class Processes:
    """Starts real child processes (qcluster, workers) on the test database; kills leftovers at teardown."""

    def __init__(self, log_dir: Path):
        self.procs: list[subprocess.Popen] = []
        self.log_dir = log_dir

    def env(self, **extra) -> dict:
        return dict(
            os.environ, DATABASE_URL=database_url(), PYTHONUNBUFFERED="1", **{k: str(v) for k, v in extra.items()}
        )

    def start(self, args: list[str], *, prefix: tuple[str, ...] = (), **env) -> subprocess.Popen:
        """Starts `python *args` (behind `prefix`, such as `unshare ...`) in its own process group; output goes
        to a log file (see `output`)."""
        log = open(self.log_dir / f"proc{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            [*prefix, sys.executable, *args],
            cwd=ROOT,
            env=self.env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.log_path = log.name
        self.procs.append(proc)
        return proc

    def output(self) -> str:
        return "\n".join(
            f"--- {' '.join(p.args)} (pid {p.pid})\n" + Path(p.log_path).read_text()[-4000:] for p in self.procs
        )

    def kill_all(self):
        import signal

        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path, request):
    procs = Processes(tmp_path)
    yield procs
    procs.kill_all()
    if os.environ.get("SHOW_PROCESS_OUTPUT") or (
        getattr(request.node, "rep_call", None) and request.node.rep_call.failed
    ):
        print(procs.output())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
