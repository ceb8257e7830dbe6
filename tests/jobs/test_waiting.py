"""Signals and durable timers: a waiting job holds no worker and no run task."""

import time

import pytest
from django.db import transaction

from jobs import services
from jobs.registry import job_type, register
from jobs.runtime import Suspend
from tests.jobs.conftest import drain, reload
from tracker.audit import history
from tracker.models import ProcessTracker

pytestmark = pytest.mark.django_db(transaction=True)


def busy_tasks(job):
    """Tracker tasks of the job that hold or want a worker now."""
    return ProcessTracker.objects.filter(
        payload__job_id=str(job.pk), status__in=["PENDING", "RETRY", "PROCESSING"], task_type="JOB_RUN"
    ).count()


def test_signal_wakes_a_waiting_job_and_no_worker_is_held_while_it_waits():
    job = services.job_create(job_type="jobs.approval_demo", params={})
    drain()
    job = reload(job)
    assert job.state == "WAITING" and job.wait_signal == "approve,reject" and job.wake_at is None
    assert busy_tasks(job) == 0
    assert not ProcessTracker.objects.filter(status="PROCESSING").exists()

    services.job_signal(job_id=job.pk, name="approve", payload={"note": "ok"}, by=None)
    assert reload(job).state == "RUNNING"
    drain()
    job = reload(job)
    assert job.state == "COMPLETED"
    assert job.result == {"decision": "approve", "payload": {"note": "ok"}}
    assert [t.to_status for t in history(job)] == ["RUNNING", "WAITING", "RUNNING", "COMPLETED"]


def test_signal_sent_before_the_job_waits_is_delivered_when_it_does():
    job = services.job_create(job_type="jobs.approval_demo", params={})
    services.job_signal(job_id=job.pk, name="reject", payload={"why": "too early"}, by=None)
    drain()
    job = reload(job)
    assert job.state == "COMPLETED"
    assert job.result == {"decision": "reject", "payload": {"why": "too early"}}
    assert "WAITING" not in [t.to_status for t in history(job)]


def test_signal_of_another_name_does_not_wake_the_job():
    job = services.job_create(job_type="jobs.approval_demo", params={})
    drain()
    services.job_signal(job_id=job.pk, name="something-else", by=None)
    assert reload(job).state == "WAITING"


def test_timeout_wakes_a_waiting_job_through_a_durable_timer():
    job = services.job_create(job_type="jobs.approval_demo", params={"timeout_seconds": 0.5})
    drain()
    job = reload(job)
    assert job.state == "WAITING" and job.wake_at is not None
    assert busy_tasks(job) == 0
    timer = ProcessTracker.objects.get(payload__job_id=str(job.pk), task_type="JOB_WAKE")
    assert timer.status == "PENDING" and timer.run_after == job.wake_at
    time.sleep(0.6)
    drain()
    job = reload(job)
    assert job.state == "COMPLETED" and job.result["decision"] == "timeout"


def test_sleep_until_suspends_and_resumes_after_the_timer():
    job = services.job_create(job_type="jobs.sleep_demo", params={"seconds": 0.5})
    drain()
    assert reload(job).state == "WAITING"
    assert busy_tasks(job) == 0
    drain()  # nothing due yet
    assert reload(job).state == "WAITING"
    time.sleep(0.6)
    drain()
    job = reload(job)
    assert job.state == "COMPLETED" and job.result["slept_until"] == job.checkpoint["wake_at"]


def test_signal_beats_the_timer_and_the_stale_timer_is_harmless():
    job = services.job_create(job_type="jobs.approval_demo", params={"timeout_seconds": 0.4})
    drain()
    services.job_signal(job_id=job.pk, name="approve", by=None)
    drain()
    assert reload(job).result["decision"] == "approve"
    time.sleep(0.5)
    drain()  # the old timer fires and does nothing
    job = reload(job)
    assert job.state == "COMPLETED" and job.result["decision"] == "approve"


def _send_from_another_connection(job_id, name):
    import threading

    from django.db import connections

    def send():
        try:
            services.job_signal(job_id=job_id, name=name, by=None)
        finally:
            connections.close_all()

    thread = threading.Thread(target=send)
    thread.start()
    thread.join()


@job_type("tests.signal_race")
def signal_race(ctx, params):
    """Looks for `go`, finds none, and the signal arrives before the job is moved to WAITING."""
    try:
        ctx.wait_for_signal("go")
    except Suspend:
        if not ctx.checkpoint_data.get("raced"):
            with transaction.atomic():
                ctx.checkpoint({"raced": True})
            _send_from_another_connection(ctx.job_id, "go")
        raise
    return {"got": "go"}


register(signal_race)


def test_signal_arriving_while_the_job_suspends_is_not_lost():
    job = services.job_create(job_type="tests.signal_race", params={})
    drain()
    job = reload(job)
    assert job.state == "COMPLETED" and job.result == {"got": "go"}
    assert "WAITING" not in [t.to_status for t in history(job)]
