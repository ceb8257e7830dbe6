import pytest
from django.test import Client

from recon.models import Entry, StagingEntry, Transaction
from tests.recon.factories import stage
from tracker import audit
from tracker.services import task_cancel
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def drain():
    Worker("admin-test").drain(budget_seconds=20)


def test_pages_render(admin_client_, ledger):
    stage(ledger.payments)
    drain()
    for url in ["/admin/recon/stagingentry/", "/admin/recon/stagingentry/?queue=review",
                "/admin/recon/stagingentry/summary/", "/admin/recon/transaction/", "/admin/recon/entry/",
                "/admin/recon/account/", "/admin/recon/reconrule/", "/admin/recon/merchant/",
                "/admin/recon/closedperiod/", f"/admin/recon/stagingentry/{StagingEntry.objects.get().pk}/change/",
                f"/admin/recon/transaction/{Transaction.objects.get().pk}/change/"]:
        assert admin_client_.get(url).status_code == 200, url
    assert admin_client_.get("/admin/recon/transaction/add/").status_code == 403


def test_review_queue_lists_review_and_stuck_entries(admin_client_, ledger):
    stuck = stage(ledger.payments, order_id="stuck")
    task_cancel(task_id=stuck.task_id)
    review = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="none")
    stage(ledger.payments, order_id="fine")
    drain()
    page = admin_client_.get("/admin/recon/stagingentry/?queue=review").content.decode()
    assert str(stuck.pk) in page and str(review.pk) in page and "NoMatchFoundError" in page
    assert page.count("/admin/recon/stagingentry/") > 0


def test_actions_reprocess_and_ignore_report_skips(admin_client_, ledger, staff_user):
    review = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="none")
    done = stage(ledger.payments, order_id="ok")
    drain()
    selected = {"action": "ignore_selected", "_selected_action": [str(review.pk), str(done.pk)]}
    page = admin_client_.post("/admin/recon/stagingentry/", selected).content.decode()
    assert "Ignore 2 staging entries" in page and "1 is in the review queue" in page  # asks for a reason
    review.refresh_from_db()
    assert review.status == "NEEDS_MANUAL_REVIEW"
    r = admin_client_.post("/admin/recon/stagingentry/", {**selected, "apply": "1", "reason": "duplicate file"},
                           follow=True)
    assert "ignore: 1 done, 1 skipped" in r.content.decode().lower()
    review.refresh_from_db()
    assert review.status == "ARCHIVED" and audit.history(review)[-1].by == "staff"
    assert audit.history(review)[-1].reason == "duplicate file"


def test_fsm_button_reprocess_creates_task(admin_client_, ledger):
    review = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="none")
    drain()
    old_task = StagingEntry.objects.get().task_id
    url = f"/admin/recon/stagingentry/{review.pk}/change/"
    assert "Reprocess" in admin_client_.get(url).content.decode()
    admin_client_.post(url, {"_fsm_transition_to": "reprocess"})
    review.refresh_from_db()
    assert review.status == "PENDING" and review.task_id != old_task
    assert audit.history(review)[-1].by == "staff"


def test_match_view(admin_client_, ledger):
    stage(ledger.payments, amount="10")
    drain()
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="10", order_id="different")
    drain()
    expected = Entry.objects.get(status="EXPECTED")
    url = f"/admin/recon/stagingentry/{confirmation.pk}/match/"
    assert str(expected.pk) in admin_client_.get(url).content.decode()
    admin_client_.post(url, {"entry_id": str(expected.pk), "reason": "same payment"})
    confirmation.refresh_from_db()
    assert confirmation.status == "PROCESSED"
    assert Transaction.objects.filter(status="POSTED").count() == 1
