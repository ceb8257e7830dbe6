"""The review queue's "Reprocess/Ignore all N matching": a job over every entry the filter matches."""

import pytest
from django.test import Client

from jobs.models import Job
from recon.models import StagingEntry
from tests.jobs.conftest import drain
from tests.recon.factories import stage
from tracker.services import task_cancel

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client_(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def test_ignore_all_matching_review_entries_as_a_job(admin_client_, ledger, staff_user):
    review = [stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id=f"none-{i}") for i in range(5)]
    stuck = stage(ledger.payments, order_id="stuck")
    task_cancel(task_id=stuck.task_id)
    fine = stage(ledger.payments, order_id="fine")
    drain()
    assert {e.status for e in StagingEntry.objects.filter(pk__in=[e.pk for e in review])} == {"NEEDS_MANUAL_REVIEW"}
    page = admin_client_.get("/admin/recon/stagingentry/", {"queue": "review"}).content.decode()
    assert "Ignore all 6 matching" in page and "Reprocess all 6 matching" in page
    confirm = admin_client_.get("/admin/recon/stagingentry/bulk/", {"queue": "review", "action": "ignore"})
    assert 'id="review-n">6<' in confirm.content.decode()
    refused = admin_client_.post("/admin/recon/stagingentry/bulk/", {"queue": "review", "action": "ignore"})
    assert refused.status_code == 302 and not Job.objects.filter(job_type="recon.review_bulk").exists()
    response = admin_client_.post("/admin/recon/stagingentry/bulk/", {"queue": "review", "action": "ignore",
                                                                      "reason": "duplicates of the old bank feed"})
    assert response.status_code == 302 and "/admin/jobs/job/" in response["Location"]
    drain()
    job = Job.objects.get(job_type="recon.review_bulk")
    assert job.state == "COMPLETED" and job.result == {"matched": 6, "changed": 6, "skipped": 0}
    assert set(StagingEntry.objects.filter(pk__in=[e.pk for e in review] + [stuck.pk]).values_list(
        "status", flat=True)) == {"ARCHIVED"}
    assert StagingEntry.objects.get(pk=fine.pk).status == "PROCESSED"
