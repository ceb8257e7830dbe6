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
