"""Real processes: a qcluster SIGKILLed in the middle of a job; waiting jobs under a running cluster."""

import os
import signal
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import services
from jobs.models import JobEvent
from tests.conftest import wait_until
from tests.jobs.conftest import reload
from tracker.models import ProcessTracker, Transition

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAST_RESCUE = {
    "TRACKER_LEASE_SECONDS": 3,
    "TRACKER_RESCUE_EVERY_SECONDS": 1,
    "TRACKER_POLL_SECONDS": 0.2,
    "JOBS_SLICE_SECONDS": 1,
}  # several slices per job


def step_logs(job):
    return [e.data["step"] for e in JobEvent.objects.filter(job=job, kind="log").order_by("id") if "step" in e.data]


def test_job_resumes_from_its_checkpoint_after_the_worker_is_killed(processes):
    job = services.job_create(job_type="jobs.countdown", params={"steps": 20, "step_seconds": 0.25})
    cluster = processes.start(["manage.py", "qcluster"], **FAST_RESCUE)

    def mid_slice():
        # Inside the first half of a slice after the first (a slice lasts JOBS_SLICE_SECONDS = 1 s), so the kill
        # cannot land on a slice's end, where the run task is already COMPLETED and its successor not yet claimed.
        current = reload(job)
        return (
            current.checkpoint.get("done", 0) >= 4
            and ProcessTracker.objects.filter(
                pk=current.run_task_id,
                status="PROCESSING",
                processing_started_at__gt=timezone.now() - timedelta(seconds=0.4),
            ).exists()
        )

    wait_until(mid_slice, 60, interval=0.02, message="four steps done, inside a slice")
    os.killpg(cluster.pid, signal.SIGKILL)  # the whole cluster, mid-step
    cluster.wait(timeout=10)
    killed_at = reload(job)
    assert killed_at.state == "RUNNING" and 4 <= killed_at.checkpoint["done"] < 20
    run = ProcessTracker.objects.get(pk=killed_at.run_task_id)
    assert run.status == "PROCESSING"

    processes.start(["manage.py", "qcluster"], **FAST_RESCUE)
    wait_until(lambda: reload(job).state == "COMPLETED", 90, message="job completion after restart")
    job = reload(job)
    assert job.result == {"steps": 20} and job.progress == 100
    # Every step ran exactly once: the steps committed before the kill were not executed again.
    assert step_logs(job) == list(range(1, 21))
    resumed = [e.data for e in JobEvent.objects.filter(job=job, kind="log") if "resumed" in e.data["message"]]
    assert len(resumed) == 1 and resumed[0]["checkpoint"]["done"] == killed_at.checkpoint["done"]
    assert job.attempts == 2 and job.slices >= 4
    # The tracker rescued the killed run (lease expiry) and the retry of the same task resumed the job.
    rescued = Transition.objects.filter(object_id=str(run.pk), from_status="PROCESSING", to_status="RETRY")
    assert rescued.filter(by_worker="rescuer").exists()


def test_waiting_job_holds_no_worker_and_its_timer_fires_under_a_cluster(processes, staff_api):
    job = services.job_create(job_type="jobs.approval_demo", params={"timeout_seconds": 3})
    processes.start(["manage.py", "qcluster"], **FAST_RESCUE)
    wait_until(lambda: reload(job).state == "WAITING", 60, message="job waiting")
    # The slice commits WAITING from its own connection; the worker completes the run task just after (its own
    # commit, milliseconds later on a quiet machine): from then on no worker is held.
    wait_until(
        lambda: not ProcessTracker.objects.filter(status="PROCESSING", task_type="JOB_RUN").exists(),
        5,
        message="the run task released",
    )
    assert reload(job).state == "WAITING"
    assert not ProcessTracker.objects.filter(status__in=["PENDING", "RETRY"], task_type="JOB_RUN").exists()
    wait_until(lambda: reload(job).state == "COMPLETED", 60, message="timer wake-up")
    assert reload(job).result["decision"] == "timeout"

    other = services.job_create(job_type="jobs.approval_demo", params={})
    wait_until(lambda: reload(other).state == "WAITING", 60, message="second job waiting")
    assert staff_api.post(f"/api/jobs/{other.pk}/signal/", {"name": "reject"}, format="json").status_code == 200
    wait_until(lambda: reload(other).state == "COMPLETED", 60, message="signal wake-up")
    assert reload(other).result["decision"] == "reject"


def test_pause_and_resume_through_the_api_under_a_cluster(processes, staff_api):
    job = services.job_create(job_type="jobs.countdown", params={"steps": 30, "step_seconds": 0.1})
    processes.start(["manage.py", "qcluster"], **FAST_RESCUE)
    wait_until(lambda: reload(job).checkpoint.get("done", 0) >= 3, 60, message="three steps done")
    assert staff_api.post(f"/api/jobs/{job.pk}/pause/").json()["state"] == "PAUSED"
    wait_until(
        lambda: (
            not ProcessTracker.objects.filter(task_type="JOB_RUN")
            .exclude(status__in=["COMPLETED", "CANCELLED", "FAILED"])
            .exists()
        ),
        30,
        message="the slice to stop",
    )
    paused_at = reload(job).checkpoint["done"]
    import time

    time.sleep(1.5)
    assert reload(job).checkpoint["done"] == paused_at and reload(job).state == "PAUSED"
    assert staff_api.post(f"/api/jobs/{job.pk}/resume/").json()["state"] == "RUNNING"
    wait_until(lambda: reload(job).state == "COMPLETED", 60, message="completion after resume")
    assert step_logs(job) == list(range(1, 31))
