"""Exports of the review queue, unmatched expectations, a period's legs and its summary, as CSV and XLSX."""

import csv
import io

import pytest
from openpyxl import load_workbook

from tests.recon.factories import stage
from tracker.worker import Worker


def body(response) -> bytes:
    return b"".join(response.streaming_content)


@pytest.fixture
def worked(ledger):
    stage(ledger.payments, order_id="paid", amount="10.00")
    stage(ledger.payments, order_id="open", amount="20.00")
    stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="paid", amount="10.00")
    stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="=HYPERLINK(\"x\")", amount="5.00")
    Worker("exports").drain(budget_seconds=20)
    return ledger


@pytest.mark.django_db
def test_review_queue_csv_streams_rows_with_formulas_made_inert(worked, viewer_api):
    response = viewer_api.get("/api/merchants/acme/exports/review-queue/?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"] and ".csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body(response).decode("utf-8-sig"))))
    assert [(r["order_id"], r["error_type"], r["amount"], r["account"]) for r in rows] == [
        ("'=HYPERLINK(\"x\")", "NoMatchFoundError", "5.0000", "bank")]
    assert float(rows[0]["age_days"]) >= 0


@pytest.mark.django_db
def test_unmatched_expectations_xlsx(worked, viewer_api):
    response = viewer_api.get("/api/merchants/acme/exports/unmatched-expectations?format=xlsx")
    assert response.status_code == 200 and "spreadsheetml" in response["Content-Type"]
    sheet = load_workbook(io.BytesIO(body(response)), read_only=True).active
    header, *rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert header[:5] == ["entry_id", "logical_transaction_id", "transaction_status", "account", "order_id"]
    assert [(r[4], r[6], r[3]) for r in rows] == [("open", "20.0000", "bank")]


@pytest.mark.django_db
def test_period_exports_need_dates_and_cover_the_period(worked, viewer_api):
    url = "/api/merchants/acme/exports/transactions/"
    assert viewer_api.get(url).status_code == 400
    assert viewer_api.get(url + "?start_date=2026-11-02&end_date=2026-11-01").status_code == 400
    rows = list(csv.DictReader(io.StringIO(body(viewer_api.get(
        url + "?start_date=2000-01-01&end_date=2100-01-01")).decode("utf-8-sig"))))
    assert {r["entry_status"] for r in rows} == {"POSTED", "EXPECTED", "ARCHIVED"}
    assert len({r["transaction_id"] for r in rows}) == 3  # open v1, paid v1 (archived) and paid v2
    summary = viewer_api.get("/api/merchants/acme/exports/period-summary/?start_date=2000-01-01&end_date=2100-01-01"
                             "&format=xlsx")
    sheet = load_workbook(io.BytesIO(body(summary)), read_only=True).active
    figures = {r[0]: r[1] for r in sheet.iter_rows(values_only=True)}
    assert figures["in the review queue"] == 1 and figures["staging entries PROCESSED"] == 3


@pytest.mark.django_db
def test_exports_are_scoped_and_validated(worked, other_merchant_operator_api, viewer_api):
    assert other_merchant_operator_api.get("/api/merchants/acme/exports/review-queue/").status_code == 404
    assert viewer_api.get("/api/merchants/acme/exports/nothing/").status_code == 404
    assert viewer_api.get("/api/merchants/acme/exports/review-queue/?format=pdf").status_code == 400
    only_payments = viewer_api.get(f"/api/merchants/acme/exports/review-queue/?account_id={worked.payments.pk}")
    assert len(list(csv.reader(io.StringIO(body(only_payments).decode("utf-8-sig"))))) == 1  # the header only
    assert viewer_api.get("/api/merchants/acme/exports/review-queue/?account_id=nope").status_code == 404


@pytest.mark.django_db
def test_ageing_buckets_follow_the_rows_age(worked):
    import datetime as dt

    from django.utils import timezone

    from recon import reports
    from recon.models import StagingEntry

    now = timezone.now()
    for days, order in ((2, "a"), (5, "b"), (40, "c")):
        e = stage(worked.bank, mode="CONFIRMATION", side="CREDIT", order_id=f"old-{order}")
        StagingEntry.objects.filter(pk=e.pk).update(created_at=now - dt.timedelta(days=days))
    Worker("ageing").drain(budget_seconds=20)
    summary = reports.summary("acme")
    assert summary["review_queue_ageing"] == {"<1d": 1, "1-3d": 1, "3-7d": 1, "7-30d": 0, ">30d": 1}
