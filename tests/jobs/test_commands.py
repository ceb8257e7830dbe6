"""The jobs management commands."""

import io

import pytest
from django.core.management import CommandError, call_command

from jobs.models import Job
from tests.jobs.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_jobs_start_no_follow_prints_the_id():
    out = run("jobs_start", "jobs.countdown", "--param", "steps=2", "--param", "step_seconds=0", "--no-follow")
    job = Job.objects.get()
    assert out.strip() == str(job.pk) and job.params["steps"] == 2


def test_jobs_start_follows_until_completion():
    out = run("jobs_start", "jobs.countdown", "--param", "steps=3", "--param", "step_seconds=0.05", "--run-here")
    assert '"state": "COMPLETED"' in out and "100%" in out


def test_jobs_start_exits_non_zero_when_the_job_fails():
    with pytest.raises(CommandError, match="FAILED"):
        run("jobs_start", "jobs.countdown", "--params", '{"steps": 2, "step_seconds": 0, "fail_at": 1}', "--run-here")


def test_jobs_start_rejects_bad_params():
    with pytest.raises(CommandError, match="steps"):
        run("jobs_start", "jobs.countdown", "--param", "steps=zero", "--no-follow")


def test_jobs_list_cancel_and_signal():
    run("jobs_start", "jobs.approval_demo", "--no-follow")
    job = Job.objects.get()
    drain()
    assert str(job.pk) in run("jobs_list", "--state", "WAITING")
    assert "RUNNING" in run("jobs_signal", str(job.pk), "approve", "--payload", '{"n": 1}')
    drain()
    assert Job.objects.get().result == {"decision": "approve", "payload": {"n": 1}}
    with pytest.raises(CommandError):
        run("jobs_cancel", str(job.pk))  # finished
    with pytest.raises(CommandError):
        run("jobs_signal", "not-an-id", "approve")
    run("jobs_start", "jobs.countdown", "--no-follow")
    other = Job.objects.exclude(pk=job.pk).get()
    assert "CANCELLED" in run("jobs_cancel", str(other.pk))
