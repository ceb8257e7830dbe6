"""Fixtures of the jobs tests."""

import os
import threading

import pytest

from jobs.models import Job
from tracker.worker import Worker

# The event streams' shared LISTEN connection closes as soon as no stream is open (so test databases can be
# dropped).
os.environ.setdefault("JOBS_HUB_LINGER_SECONDS", "0")


@pytest.fixture(autouse=True)
def _listener_hub_stopped():
    yield
    from tests.conftest import wait_until

    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name in ("jobs-listener-hub", "jobs-events-reader")],
        10,
        message="the event streams' hub to stop",
    )


def drain(seconds: float = 10) -> None:
    """Runs every due tracker task in this process (job slices, timers)."""
    Worker("test-worker").drain(budget_seconds=seconds)


def reload(job) -> Job:
    return Job.objects.get(pk=job.pk)


@pytest.fixture
def scoped_access(settings):
    """A tenant policy for tests: users named `<role>_<merchant>` see that merchant; `operator_*` operate it."""
    settings.TENANT_ACCESS = "tests.jobs.access"
