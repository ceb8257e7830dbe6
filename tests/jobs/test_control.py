"""Pause, resume, cancel and illegal transitions, with a worker running in a thread of this process."""

import threading

import pytest

from jobs import services
from jobs.errors import JobNotFound, JobStateConflict
from jobs.models import JobEvent
from tests.conftest import wait_until
from tests.jobs.conftest import reload
from tracker.models import ProcessTracker
from tracker.worker import Worker

pytestmark = pytest.mark.django_db(transaction=True)


class Background:
    """A tracker worker draining in a thread until nothing is due."""

    def __init__(self, seconds=30):
        self.thread = threading.Thread(target=self._run, args=(seconds,), daemon=True)
        self.thread.start()

    def _run(self, seconds):
        from django.db import connections

        try:
            Worker("bg-worker").drain(budget_seconds=seconds)
        finally:
            connections.close_all()

    def join(self):
        self.thread.join(30)
        assert not self.thread.is_alive()


def step_logs(job):
    return [e.data["step"] for e in JobEvent.objects.filter(job=job, kind="log") if "step" in e.data]


def unfinished_runs(job):
    return (
        ProcessTracker.objects.filter(payload__job_id=str(job.pk))
        .exclude(status__in=["COMPLETED", "FAILED", "CANCELLED"])
        .count()
    )


def test_pause_stops_the_running_slice_and_resume_continues_from_checkpoint(settings):
    settings.JOBS = {"STOP_CHECK_SECONDS": 0.05}
    job = services.job_create(job_type="jobs.countdown", params={"steps": 40, "step_seconds": 0.05})
    bg = Background()
    wait_until(lambda: reload(job).checkpoint.get("done", 0) >= 2, message="two steps done")
    services.job_pause(job_id=job.pk, by=None, reason="test pause")
    bg.join()
    job = reload(job)
    assert job.state == "PAUSED"
    done = job.checkpoint["done"]
    assert 2 <= done < 40
    assert unfinished_runs(job) == 0
    assert step_logs(job) == list(range(1, done + 1))

    services.job_resume(job_id=job.pk, by=None)
    Background().join()
    job = reload(job)
    assert job.state == "COMPLETED"
    assert step_logs(job) == list(range(1, 41))


def test_cancel_while_running_stops_the_job():
    job = services.job_create(job_type="jobs.countdown", params={"steps": 100, "step_seconds": 0.05})
    bg = Background()
    wait_until(lambda: reload(job).checkpoint.get("done", 0) >= 1, message="a step done")
    services.job_cancel(job_id=job.pk, by=None)
    bg.join()
    job = reload(job)
    assert job.state == "CANCELLED" and job.finished_at and job.result is None
    assert job.checkpoint["done"] < 100
    assert unfinished_runs(job) == 0


def test_cancel_before_the_first_slice_cancels_its_run_task():
    job = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    services.job_cancel(job_id=job.pk, by=None)
    assert ProcessTracker.objects.get(payload__job_id=str(job.pk)).status == "CANCELLED"
    assert reload(job).state == "CANCELLED"


@pytest.mark.parametrize("action", ["pause", "resume", "retry"])
def test_illegal_transitions_of_a_created_job_conflict(action):
    job = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    with pytest.raises(JobStateConflict):
        getattr(services, f"job_{action}")(job_id=job.pk, by=None)
    assert reload(job).state == "CREATED"


def test_finished_job_refuses_every_action_and_signals():
    job = services.job_create(job_type="jobs.countdown", params={"steps": 1, "step_seconds": 0})
    Background().join()
    assert reload(job).state == "COMPLETED"
    for action in ("pause", "resume", "retry", "cancel"):
        with pytest.raises(JobStateConflict):
            getattr(services, f"job_{action}")(job_id=job.pk, by=None)
    with pytest.raises(JobStateConflict):
        services.job_signal(job_id=job.pk, name="approve", by=None)


@pytest.mark.parametrize("job_id", ["nope", "00000000-0000-0000-0000-000000000000", "1", ""])
def test_unknown_job_ids_are_not_found(job_id):
    with pytest.raises(JobNotFound):
        services.job_cancel(job_id=job_id, by=None)
