"""The sweeper repairs what a crash between two commits can leave behind."""

import datetime as dt

import pytest
from django.utils import timezone

from jobs import services
from jobs.models import Job, JobEvent
from tests.jobs.conftest import drain, reload
from tracker.models import ProcessTracker

pytestmark = pytest.mark.django_db(transaction=True)


def age(job, seconds=120):
    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now() - dt.timedelta(seconds=seconds))


def test_running_job_without_a_run_task_gets_one_again():
    job = services.job_create(job_type="jobs.countdown", params={"steps": 2, "step_seconds": 0})
    # As if the process died after a slice committed but before the next slice was enqueued.
    ProcessTracker.objects.filter(payload__job_id=str(job.pk)).update(status="COMPLETED")
    age(job)
    assert services.job_sweep()["repaired"] == 1
    assert services.job_sweep()["repaired"] == 0  # idempotent
    drain()
    assert reload(job).state == "COMPLETED"


def test_running_job_whose_run_task_ran_out_of_attempts_fails():
    job = services.job_create(job_type="jobs.countdown", params={"steps": 2, "step_seconds": 0})
    Job.objects.filter(pk=job.pk).update(state="RUNNING")
    ProcessTracker.objects.filter(pk=reload(job).run_task_id).update(
        status="FAILED", last_error="Lease expired: the worker stopped renewing it (rescued)."
    )
    age(job)
    assert services.job_sweep()["failed"] == 1
    job = reload(job)
    assert job.state == "FAILED" and "Lease expired" in job.error


def test_overdue_timer_is_fired_by_the_sweeper():
    job = services.job_create(job_type="jobs.sleep_demo", params={"seconds": 60})
    drain()
    assert reload(job).state == "WAITING"
    ProcessTracker.objects.filter(task_type="JOB_WAKE").update(status="CANCELLED")  # the timer task is gone
    Job.objects.filter(pk=job.pk).update(wake_at=timezone.now() - dt.timedelta(seconds=10))
    assert services.job_sweep()["woken"] == 1
    assert reload(job).state == "RUNNING"


def test_events_of_long_finished_jobs_are_pruned():
    job = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    services.job_cancel(job_id=job.pk, by=None)
    assert services.job_prune_events(older_than_days=1) == 0
    Job.objects.filter(pk=job.pk).update(finished_at=timezone.now() - dt.timedelta(days=2))
    assert services.job_prune_events(older_than_days=1) == 2
    assert not JobEvent.objects.exists() and Job.objects.filter(pk=job.pk).exists()
