"""Fixtures of the jobs tests."""

import pytest

from jobs.models import Job
from tracker.worker import Worker


def drain(seconds: float = 10) -> None:
    """Runs every due tracker task in this process (job slices, timers)."""
    Worker("test-worker").drain(budget_seconds=seconds)


def reload(job) -> Job:
    return Job.objects.get(pk=job.pk)


@pytest.fixture
def scoped_access(settings):
    """A tenant policy for tests: users named `<role>_<merchant>` see that merchant; `operator_*` operate it."""
    settings.TENANT_ACCESS = "tests.jobs.access"
