"""Who may start which job, how many, and at what priority (issue 17, item 7): demo types are for staff only
(and gone with JOBS_DEMO_TYPES=0), personal jobs are limited per user, and personal or demo job slices never
run ahead of staging entries, while merchant jobs (imports, period closes) keep their priority."""

import os
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model

from jobs import services
from jobs.models import Job
from jobs.registry import job_type, register
from jobs.runtime import JOB_RUN
from tests.conftest import ROOT, client_for
from tracker import services as tracker_services
from tracker.models import ProcessTracker

pytestmark = pytest.mark.django_db
DEMO = ("jobs.countdown", "jobs.approval_demo", "jobs.sleep_demo")


@job_type("tests.personal")
def personal(ctx, params):
    """Not a demo type: any user may start it as a personal job."""
    return {}


register(personal)


def user(name, **extra):
    return get_user_model().objects.create_user(name, password="pw", **extra)


@pytest.mark.parametrize("job_type_name", DEMO)
def test_demo_types_are_startable_by_staff_only(job_type_name, staff_api):
    resp = client_for(user("viewer_m1")).post("/api/jobs/", {"job_type": job_type_name}, format="json")
    assert resp.status_code == 403
    assert resp.json()["code"] == "permission_denied" and "Only staff" in resp.json()["error"]
    assert not Job.objects.exists()
    assert staff_api.post("/api/jobs/", {"job_type": job_type_name}, format="json").status_code == 201


def test_jobs_demo_types_0_removes_them():
    code = "import django; django.setup(); from jobs import registry; print(','.join(registry.all_types()))"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    on = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    off = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "JOBS_DEMO_TYPES": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert set(DEMO) <= set(on.stdout.strip().split(",")), on.stderr
    assert not set(DEMO) & set(off.stdout.strip().split(",")), off.stderr
    assert "recon.close_period" in off.stdout


def test_personal_jobs_are_limited_per_user(settings):
    settings.JOBS = {"PERSONAL_MAX_PER_USER": 2}
    alice, bob = user("alice"), user("bob")
    api = client_for(alice)
    assert [api.post("/api/jobs/", {"job_type": "tests.personal"}, format="json").status_code for _ in range(3)] == [
        201,
        201,
        429,
    ]
    resp = api.post("/api/jobs/", {"job_type": "tests.personal"}, format="json")
    assert resp.json()["code"] == "throttled" and resp.json()["details"] == {"unfinished": 2, "limit": 2}
    # Per user: bob is not held back; a finished (cancelled) job frees a place.
    assert client_for(bob).post("/api/jobs/", {"job_type": "tests.personal"}, format="json").status_code == 201
    services.job_cancel(job_id=Job.objects.filter(owner=alice).first().pk)
    assert api.post("/api/jobs/", {"job_type": "tests.personal"}, format="json").status_code == 201
    assert Job.objects.filter(owner=alice).count() == 3


def test_side_jobs_run_after_staging_entries_and_merchant_jobs_before(ledger):
    from tests.recon.factories import stage

    personal_job = services.job_create(job_type="tests.personal", owner=user("alice"))
    demo_job = services.job_create(
        job_type="jobs.countdown", params={"steps": 1, "step_seconds": 0}, merchant_id=ledger.merchant.pk
    )
    merchant_job = services.job_create(
        job_type="recon.close_period",
        merchant_id=ledger.merchant.pk,
        params={"merchant_id": ledger.merchant.pk, "start_date": "2026-10-01", "end_date": "2026-10-31"},
    )
    stage(ledger.payments, order_id="o-1")

    def priority(job):
        return ProcessTracker.objects.get(task_type=JOB_RUN, payload__job_id=str(job.pk)).priority

    assert (priority(personal_job), priority(demo_job), priority(merchant_job)) == (200, 200, 100)
    claimed = tracker_services.task_claim(worker_id="w", limit=4)
    kinds = [t.payload.get("job_id") or "staging" for t in claimed]
    assert kinds == [str(merchant_job.pk), "staging", str(personal_job.pk), str(demo_job.pk)]


def test_import_params_of_another_merchant_answer_as_unknown_ones(ledger, operator_api):
    """Issue 17, item 8: checked at POST, with the same answer for another merchant's objects and unknown ids."""
    import uuid

    from recon.uploads import upload_store
    from tests.recon.factories import AccountFactory, MerchantFactory

    rival = AccountFactory(merchant=MerchantFactory(merchant_id="rival"))
    theirs = upload_store(account=rival, name="x.csv", source=[b"order_id,amount,currency,transaction_date,type\n"])
    answers = []
    for account_id, upload_id in ((rival.pk, theirs.pk), (uuid.uuid4(), uuid.uuid4())):
        resp = operator_api.post(
            "/api/jobs/",
            {
                "job_type": "recon.import_csv",
                "merchant_id": ledger.merchant.pk,
                "params": {
                    "account_id": str(account_id),
                    "upload_id": str(upload_id),
                    "processing_mode": "TRANSACTION",
                },
            },
            format="json",
        )
        answers.append((resp.status_code, resp.json()))
    assert answers[0] == answers[1] and answers[0][0] == 400
    assert not Job.objects.exists()
