"""`recon.close_period` job: summary, approve/reject signals, and the closed period enforced on the engine,
the CSV import and resolve."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs import services as job_services
from recon import uploads
from recon.models import ClosedPeriod, StagingEntry
from tests.jobs.conftest import drain, reload
from tests.recon.factories import stage

pytestmark = pytest.mark.django_db(transaction=True)

OCT = {"merchant_id": "acme", "start_date": "2026-10-01", "end_date": "2026-10-31"}
IN_OCT = dt.datetime(2026, 10, 15, 12, tzinfo=dt.UTC)


def start(api, params=OCT):
    response = api.post("/api/jobs/", {"job_type": "recon.close_period", "params": params,
                                       "merchant_id": params["merchant_id"]}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["job_id"]


def test_approve_closes_the_period_and_it_is_enforced_everywhere(ledger, operator, operator_api):
    stage(ledger.payments, order_id="before", when=IN_OCT)
    stage(ledger.payments, order_id="november")  # outside the period
    drain()
    job_id = start(operator_api)
    drain()
    job = operator_api.get(f"/api/jobs/{job_id}/").json()
    assert job["state"] == "WAITING" and job["step"] == "waiting for approve or reject"
    summary = job["checkpoint"]["summary"]
    assert summary["staging_entries"]["total"] == 1 and summary["staging_entries"]["by_status"]["PROCESSED"] == 1
    assert summary["entries"]["by_status"] == {"EXPECTED": 1, "POSTED": 1, "ARCHIVED": 0}
    assert summary["amounts_by_currency"]["USD"]["POSTED"] == {"total": "100.00", "count": 1}
    assert not ClosedPeriod.objects.exists()

    assert operator_api.post(f"/api/jobs/{job_id}/signal/", {"name": "approve"}, format="json").status_code == 200
    drain()
    job = operator_api.get(f"/api/jobs/{job_id}/").json()
    assert job["state"] == "COMPLETED"
    assert job["result"]["status"] == "closed" and job["result"]["approved_by"] == "operator"
    period = ClosedPeriod.objects.get()
    assert (period.merchant_id, period.start_date, period.end_date) == ("acme", dt.date(2026, 10, 1),
                                                                        dt.date(2026, 10, 31))
    assert period.closed_by == operator and period.reopened_at is None
    assert job["result"]["period_id"] == period.pk

    # Engine: an entry dated in the period goes to review.
    late = stage(ledger.payments, order_id="late", when=IN_OCT)
    # CSV import: its rows go through the engine the same way.
    content = (b"order_id,amount,currency,transaction_date,type\n"
               b"csv-oct,5.00,USD,2026-10-20,Payment\ncsv-nov,5.00,USD,2026-11-20,Payment\n")
    uploads.file_import_start(account=ledger.payments, file=SimpleUploadedFile("oct.csv", content), name="oct.csv",
                             processing_mode="TRANSACTION")
    drain()
    by_order = {e.metadata["order_id"]: e for e in StagingEntry.objects.all()}
    for key in ("late", "csv-oct"):
        assert by_order[key].status == "NEEDS_MANUAL_REVIEW"
        assert by_order[key].metadata["error_type"] == "PeriodClosedError"
    assert by_order["csv-nov"].status == "PROCESSED"
    # Resolve into the closed period: 409 period_closed.
    refused = operator_api.post(f"/api/staging-entries/{late.pk}/resolve/", {"action": "reprocess"}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "period_closed"


def test_reject_leaves_the_period_open(ledger, operator_api):
    job_id = start(operator_api)
    drain()
    assert operator_api.post(f"/api/jobs/{job_id}/signal/", {"name": "reject", "payload": {"why": "not yet"}},
                             format="json").status_code == 200
    drain()
    job = operator_api.get(f"/api/jobs/{job_id}/").json()
    assert job["state"] == "COMPLETED"
    assert job["result"]["status"] == "rejected" and job["result"]["payload"] == {"why": "not yet"}
    assert not ClosedPeriod.objects.exists()
    entry = stage(ledger.payments, order_id="oct", when=IN_OCT)
    drain()
    assert StagingEntry.objects.get(pk=entry.pk).status == "PROCESSED"


def test_signal_sent_before_the_job_waits_is_delivered(ledger, staff_user, staff_api):
    job_id = start(staff_api)
    assert staff_api.post(f"/api/jobs/{job_id}/signal/", {"name": "approve"}, format="json").status_code == 200
    drain()
    job = staff_api.get(f"/api/jobs/{job_id}/").json()
    assert job["state"] == "COMPLETED" and job["result"]["status"] == "closed"
    assert ClosedPeriod.objects.get().closed_by == staff_user


def test_viewers_cannot_approve_and_bad_params_are_400(ledger, operator_api, viewer_api):
    job_id = start(operator_api)
    drain()
    assert viewer_api.post(f"/api/jobs/{job_id}/signal/", {"name": "approve"}, format="json").status_code == 403
    bad = operator_api.post("/api/jobs/", {"job_type": "recon.close_period", "merchant_id": "acme",
                                           "params": {**OCT, "end_date": "2026-09-01"}}, format="json")
    assert bad.status_code == 400
    unknown = operator_api.post("/api/jobs/", {"job_type": "recon.close_period", "merchant_id": "acme",
                                               "params": {**OCT, "merchant_id": "nope"}}, format="json")
    assert unknown.status_code == 400


def test_a_job_of_another_merchant_cannot_close_the_period(ledger):
    """Refused when the job is created (issue 17, item 8), not after it started."""
    from jobs.errors import InvalidJobParams
    from jobs.models import Job

    with pytest.raises(InvalidJobParams, match="Must be the job's own merchant_id"):
        job_services.job_create(job_type="recon.close_period", params=OCT, merchant_id="")
    assert not Job.objects.exists() and not ClosedPeriod.objects.exists()


def test_another_merchants_id_in_params_answers_as_an_unknown_one(ledger, operator_api, django_user_model):
    from jobs.models import Job
    from tests.recon.factories import MerchantFactory

    MerchantFactory(merchant_id="rival")
    answers = []
    for target in ("rival", "no-such-merchant"):
        resp = operator_api.post("/api/jobs/", {"job_type": "recon.close_period", "merchant_id": ledger.merchant.pk,
                                                "params": {**OCT, "merchant_id": target}}, format="json")
        answers.append((resp.status_code, resp.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 400 and answers[0][1]["details"] == {"params": {"merchant_id": ["Unknown merchant."]}}
    # And as the job's merchant: another's and an unknown one are both 404.
    for target in ("rival", "no-such-merchant"):
        resp = operator_api.post("/api/jobs/", {"job_type": "recon.close_period", "merchant_id": target,
                                                "params": {**OCT, "merchant_id": target}}, format="json")
        assert resp.status_code == 404 and resp.json()["error"] == "Merchant not found."
    assert not Job.objects.exists()


def test_recon_demo_leaves_a_close_period_job_waiting_and_stays_idempotent():
    import io

    from django.core.management import call_command

    from jobs.models import Job

    out = io.StringIO()
    call_command("recon_demo", stdout=out)
    job = Job.objects.get(job_type="recon.close_period")
    assert job.merchant_id == "demo" and job.owner.username == "demo_operator"
    from django.utils import timezone

    today = timezone.now().date()
    end = today.replace(day=1) - dt.timedelta(days=1)
    assert job.params["start_date"] == end.replace(day=1).isoformat() and job.params["end_date"] == end.isoformat()
    drain()
    assert reload(job).state == "WAITING"
    count = StagingEntry.objects.count()
    call_command("recon_demo", stdout=out)
    assert Job.objects.filter(job_type="recon.close_period").count() == 1 and StagingEntry.objects.count() == count
    assert f"close-period job {job.pk} [WAITING]" in out.getvalue()


def test_periods_are_listed_and_staff_reopen_them(ledger, operator_api, staff_api, other_merchant_operator_api):
    job_id = start(operator_api)
    operator_api.post(f"/api/jobs/{job_id}/signal/", {"name": "approve"}, format="json")
    drain()
    listed = operator_api.get("/api/merchants/acme/periods").json()
    assert listed["count"] == 1
    period = listed["results"][0]
    assert period["start_date"] == "2026-10-01" and period["closed_by"] == "operator"
    assert period["reopened_at"] is None
    assert other_merchant_operator_api.get("/api/merchants/acme/periods/").status_code == 404
    url = f"/api/merchants/acme/periods/{period['id']}/reopen/"
    assert operator_api.post(url).status_code == 403
    assert staff_api.post("/api/merchants/acme/periods/999999/reopen/").status_code == 404
    assert staff_api.post("/api/merchants/acme/periods/x/reopen").status_code == 404
    reopened = staff_api.post(url)
    assert reopened.status_code == 200 and reopened.json()["reopened_by"] == "staff"
    again = staff_api.post(url)
    assert again.status_code == 409 and again.json()["code"] == "illegal_transition"
    entry = stage(ledger.payments, order_id="oct", when=IN_OCT)
    drain()
    assert StagingEntry.objects.get(pk=entry.pk).status == "PROCESSED"


# --- guard rails: open entries keep the period open unless the approver forces it -----------------------

def _events(job_id) -> list[str]:
    from jobs.models import JobEvent

    return [e.data.get("message", "") for e in JobEvent.objects.filter(job_id=job_id, kind="log").order_by("id")]


def test_approve_waits_while_entries_of_the_period_are_open_and_recomputes_the_summary(ledger, operator,
                                                                                        operator_api):
    from tracker import audit

    review = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="nothing", when=IN_OCT)
    drain()
    job_id = start(operator_api)
    drain()
    stage(ledger.payments, order_id="late-oct", when=IN_OCT)  # PENDING when approved: not drained yet
    operator_api.post(f"/api/jobs/{job_id}/signal/", {"name": "approve"}, format="json")
    from jobs.runtime import run_slice

    run_slice(job_id)  # only the job's slice, so the new entry stays PENDING
    job = operator_api.get(f"/api/jobs/{job_id}/").json()
    assert job["state"] == "WAITING" and not ClosedPeriod.objects.exists()
    assert any("2 staging entries dated in the period are still open (1 in review, 1 pending)" in m
               for m in _events(job_id))
    assert job["checkpoint"]["summary"]["staging_entries"]["total"] == 2  # recomputed at the approve
    assert job["checkpoint"]["refused"] == 1

    # Forcing without a reason is refused the same way; the job keeps waiting.
    operator_api.post(f"/api/jobs/{job_id}/signal/", {"name": "approve", "payload": {"force": True}}, format="json")
    run_slice(job_id)
    assert operator_api.get(f"/api/jobs/{job_id}/").json()["state"] == "WAITING"
    assert any("A forced close needs a reason" in m for m in _events(job_id))

    # Resolving the open entries lets a plain approve close the period.
    drain()  # processes the pending entry
    operator_api.post(f"/api/staging-entries/{review.pk}/resolve/", {"action": "ignore", "reason": "test"},
                      format="json")
    operator_api.post(f"/api/jobs/{job_id}/signal/", {"name": "approve"}, format="json")
    drain()
    job = operator_api.get(f"/api/jobs/{job_id}/").json()
    assert job["state"] == "COMPLETED" and job["result"]["status"] == "closed" and job["result"]["forced"] is False
    period = ClosedPeriod.objects.get()
    assert period.closed_by == operator and job["result"]["closed_at"] == period.closed_at.isoformat()
    rows = audit.history(period)
    assert [(r.from_status, r.to_status, r.by) for r in rows] == [("OPEN", "CLOSED", "operator")]


def test_a_forced_approve_closes_with_open_entries_and_is_audited(ledger, operator, operator_api):
    from tracker import audit

    stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="nothing", when=IN_OCT)
    drain()
    job_id = start(operator_api)
    drain()
    operator_api.post(f"/api/jobs/{job_id}/signal/",
                      {"name": "approve", "payload": {"force": True, "reason": "auditor accepted the gap"}},
                      format="json")
    drain()
    job = operator_api.get(f"/api/jobs/{job_id}/").json()
    assert job["state"] == "COMPLETED" and job["result"]["forced"] is True
    period = ClosedPeriod.objects.get()
    assert "forced with 1 open entries (1 in review, 0 pending): auditor accepted the gap" in period.reason
    row = audit.history(period)[-1]
    assert row.by == "operator" and "auditor accepted the gap" in row.reason


def test_period_close_service_refuses_open_entries_for_every_caller(ledger):
    from recon import errors, services

    stage(ledger.payments, order_id="pending", when=IN_OCT)  # PENDING
    kwargs = {"merchant": ledger.merchant, "start_date": dt.date(2026, 10, 1), "end_date": dt.date(2026, 10, 31)}
    with pytest.raises(errors.PeriodHasOpenEntriesError) as refused:
        services.period_close(**kwargs)
    assert refused.value.status == 409 and refused.value.details == {"in_review": 0, "pending": 1, "total": 1}
    with pytest.raises(ValidationError):
        services.period_close(**kwargs, force=True, force_reason="  ")
    assert not ClosedPeriod.objects.exists()
    # Outside the period: nothing open, the close goes through.
    period = services.period_close(merchant=ledger.merchant, start_date=dt.date(2026, 9, 1),
                                   end_date=dt.date(2026, 9, 30))
    assert period.pk and period.reason == "period closed"
