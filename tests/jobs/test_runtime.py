import pytest

from jobs import services
from jobs.models import JobEvent
from tests.jobs.conftest import drain, reload
from tracker.audit import history
from tracker.models import ProcessTracker

pytestmark = pytest.mark.django_db(transaction=True)


def test_countdown_job_runs_to_completion_with_progress_and_audit():
    job = services.job_create(job_type="jobs.countdown", params={"steps": 3, "step_seconds": 0})
    assert job.state == "CREATED"
    drain()
    job = reload(job)
    assert job.state == "COMPLETED", job.error_details
    assert job.result == {"steps": 3}
    assert job.progress == 100 and job.checkpoint == {"done": 3}
    assert job.attempts == 1 and job.started_at and job.finished_at
    assert [(t.from_status, t.to_status) for t in history(job)] == [("CREATED", "RUNNING"), ("RUNNING", "COMPLETED")]
    logs = [e.data["message"] for e in JobEvent.objects.filter(job=job, kind="log")]
    assert logs[-3:] == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    assert ProcessTracker.objects.filter(task_type="JOB_RUN").get().status == "COMPLETED"


def test_long_job_runs_in_slices_and_resumes_from_each_checkpoint(settings):
    settings.JOBS = {"SLICE_SECONDS": 0.25}
    job = services.job_create(job_type="jobs.countdown", params={"steps": 6, "step_seconds": 0.1})
    drain(30)
    job = reload(job)
    assert job.state == "COMPLETED", job.error_details
    assert job.slices >= 2
    assert ProcessTracker.objects.filter(task_type="JOB_RUN", status="COMPLETED").count() == job.slices
    steps = [e.data["step"] for e in JobEvent.objects.filter(job=job, kind="log") if "step" in e.data]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_failed_job_keeps_error_and_retry_resumes_from_checkpoint():
    job = services.job_create(job_type="jobs.countdown", params={"steps": 3, "step_seconds": 0, "fail_at": 2})
    drain()
    job = reload(job)
    assert job.state == "FAILED"
    assert "step 2 failed on purpose" in job.error and "Traceback" in job.error_details
    assert job.checkpoint == {"done": 1}
    # Its run task failed with it, so the task list's FAILED filter shows it (not COMPLETED).
    failed_task = ProcessTracker.objects.get(pk=job.run_task_id)
    assert failed_task.status == "FAILED" and "step 2 failed on purpose" in failed_task.last_error
    assert failed_task.attempts == 1  # not retried by the tracker: an operator retries the job
    services.job_retry(job_id=job.pk, by=None)
    drain()
    job = reload(job)
    assert job.state == "COMPLETED" and job.attempts == 2
    # The retry ran on a new task, which completed; the failed one stays FAILED.
    assert job.run_task_id != failed_task.pk
    assert ProcessTracker.objects.get(pk=job.run_task_id).status == "COMPLETED"
    assert ProcessTracker.objects.get(pk=failed_task.pk).status == "FAILED"
    steps = [e.data["step"] for e in JobEvent.objects.filter(job=job, kind="log") if "step" in e.data]
    assert steps == [1, 2, 3]


def test_unknown_job_type_of_a_stored_job_fails_it():
    job = services.job_create(job_type="jobs.countdown", params={"steps": 1, "step_seconds": 0})
    type(job).objects.filter(pk=job.pk).update(job_type="gone.away")
    drain()
    job = reload(job)
    assert job.state == "FAILED" and "gone.away" in job.error
