import pytest

from recon.models import Entry, StagingEntry
from tests.recon.factories import stage
from tracker.models import ProcessTracker
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


def body(**over):
    data = {"entry_type": "DEBIT", "amount": "100.50", "currency": "USD", "effective_date": "2026-11-01",
            "processing_mode": "TRANSACTION", "metadata": {"order_id": "o1"}}
    data.update(over)
    return data


def drain():
    return Worker("api-test").drain(budget_seconds=20)


def test_create_staging_entry_with_task(operator_api, ledger):
    r = operator_api.post(f"/api/accounts/{ledger.payments.pk}/staging-entries/", body(), format="json")
    assert r.status_code == 201, r.json()
    data = r.json()
    assert data["status"] == "PENDING" and data["amount"] == "100.50"
    assert data["effective_date"] == "2026-11-01T00:00:00Z" and data["metadata"] == {"order_id": "o1"}
    task = ProcessTracker.objects.get(pk=data["task_id"])
    assert task.task_type == "PROCESS_STAGING_ENTRY" and task.tenant == "acme"
    assert task.payload == {"staging_entry_id": data["staging_entry_id"], "mode": "TRANSACTION"}


def test_idempotency_over_api(operator_api, ledger):
    url = f"/api/accounts/{ledger.payments.pk}/staging-entries"
    first = operator_api.post(url, body(idempotency_key="abc"), format="json")
    again = operator_api.post(url, body(idempotency_key="abc"), format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["staging_entry_id"] == again.json()["staging_entry_id"]
    conflict = operator_api.post(url, body(idempotency_key="abc", amount="1"), format="json")
    assert conflict.status_code == 409 and conflict.json()["code"] == "idempotency_conflict"
    assert StagingEntry.objects.count() == 1 == ProcessTracker.objects.count()


@pytest.mark.parametrize("over", [
    {"amount": "0"}, {"amount": "-5"}, {"amount": "1.23456"}, {"amount": "abc"}, {"currency": "XYZ"},
    {"entry_type": "SIDEWAYS"}, {"processing_mode": "LATER"}, {"effective_date": "yesterday"},
    {"effective_date": "2026-11-01T10:00:00"}, {"metadata": [1, 2]},
])
def test_staging_entry_validation(operator_api, ledger, over):
    r = operator_api.post(f"/api/accounts/{ledger.payments.pk}/staging-entries/", body(**over), format="json")
    assert r.status_code == 400 and r.json()["code"] == "validation_error", r.json()
    assert not StagingEntry.objects.exists()


def test_numbers_parsed_as_decimal(operator_api, ledger):
    r = operator_api.post(f"/api/accounts/{ledger.payments.pk}/staging-entries/", body(amount=0.1),
                          format="json")
    assert r.status_code == 201 and r.json()["amount"] == "0.10"
    r = operator_api.post(f"/api/accounts/{ledger.payments.pk}/staging-entries/",
                          body(amount="1.2345", metadata={"order_id": "o2"},
                               effective_date="2026-11-01T10:00:00+02:00"), format="json")
    assert r.json()["amount"] == "1.2345" and r.json()["effective_date"] == "2026-11-01T08:00:00Z"


def test_foreign_currency_is_accepted_and_reviewed(operator_api, ledger):
    r = operator_api.post(f"/api/accounts/{ledger.payments.pk}/staging-entries/", body(currency="EUR"), format="json")
    assert r.status_code == 201
    drain()
    detail = operator_api.get(f"/api/staging-entries/{r.json()['staging_entry_id']}").json()
    assert detail["status"] == "NEEDS_MANUAL_REVIEW" and detail["metadata"]["error_type"] == "CurrencyMismatchError"


def test_staging_permissions(viewer_api, other_merchant_operator_api, anon_api, ledger):
    url = f"/api/accounts/{ledger.payments.pk}/staging-entries/"
    assert viewer_api.post(url, body(), format="json").status_code == 403
    assert other_merchant_operator_api.post(url, body(), format="json").status_code == 404
    assert anon_api.post(url, body(), format="json").status_code == 401
    assert viewer_api.post("/api/accounts/nope/staging-entries/", body(), format="json").status_code == 404
    assert viewer_api.get(url).status_code == 200
    entry = stage(ledger.payments)
    assert other_merchant_operator_api.get(f"/api/staging-entries/{entry.pk}/").status_code == 404
    assert other_merchant_operator_api.post(f"/api/staging-entries/{entry.pk}/resolve/", {"action": "reprocess"},
                                            format="json").status_code == 404
    assert viewer_api.post(f"/api/staging-entries/{entry.pk}/resolve/", {"action": "reprocess"},
                           format="json").status_code == 403
    assert viewer_api.get("/api/staging-entries/12345/").status_code == 404


def test_list_filter_by_status(viewer_api, ledger):
    stage(ledger.payments, order_id="a")
    drain()
    stage(ledger.payments, order_id="b")
    url = f"/api/accounts/{ledger.payments.pk}/staging-entries/"
    assert viewer_api.get(url).json()["count"] == 2
    assert viewer_api.get(url + "?status=PENDING").json()["count"] == 1
    assert viewer_api.get(url + "?status=PROCESSED").json()["results"][0]["metadata"]["match_type"] == \
        "NewTransactionGenerated"
    assert viewer_api.get(url + "?status=bogus").status_code == 400


def test_resolve_over_api(operator_api, ledger):
    stage(ledger.payments, amount="100")
    drain()
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="50")
    drain()
    url = f"/api/staging-entries/{confirmation.pk}/resolve/"
    assert operator_api.post(url, {"action": "dance"}, format="json").status_code == 400
    assert operator_api.post(url, {"action": "ignore"}, format="json").status_code == 400
    expected = Entry.objects.get(status="EXPECTED")
    r = operator_api.post(url, {"action": "match", "entry_id": str(expected.pk)}, format="json")
    assert r.status_code == 422  # amounts disagree beyond the (zero) tolerance
    assert operator_api.post(url, {"action": "match", "entry_id": "nope"}, format="json").status_code == 404
    r = operator_api.post(url, {"action": "ignore", "reason": "duplicate bank line"}, format="json")
    assert r.status_code == 200 and r.json()["status"] == "ARCHIVED" and r.json()["discarded_at"]
    r = operator_api.post(url, {"action": "reprocess"}, format="json")
    assert r.status_code == 409 and r.json()["code"] == "illegal_transition"


def test_ledger_listings(viewer_api, ledger):
    stage(ledger.payments, amount="10")
    drain()
    stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="10")
    drain()
    txns = viewer_api.get("/api/merchants/acme/transactions/").json()
    assert txns["count"] == 2
    posted = viewer_api.get("/api/merchants/acme/transactions?status=POSTED&version=2").json()["results"]
    assert len(posted) == 1 and posted[0]["amount"] == "10.00" and len(posted[0]["entries"]) == 2
    assert viewer_api.get("/api/merchants/acme/transactions/?version=x").status_code == 400
    logical = posted[0]["logical_transaction_id"]
    assert viewer_api.get(f"/api/merchants/acme/transactions/?logical_transaction_id={logical}").json()["count"] == 2
    entries = viewer_api.get(f"/api/accounts/{ledger.bank.pk}/entries/?status=POSTED").json()
    assert entries["count"] == 1 and entries["results"][0]["amount"] == "10.00"
    assert viewer_api.get(f"/api/accounts/{ledger.bank.pk}/entries").json()["count"] == 2


def test_trigger_and_summary(staff_api, operator_api, ledger):
    stage(ledger.payments, order_id="a")
    stage(ledger.payments, order_id="b")
    assert operator_api.post("/api/recon-engine/trigger/", {}, format="json").status_code == 403
    assert staff_api.post("/api/recon-engine/trigger/", {"timeout_ms": 10}, format="json").status_code == 400
    r = staff_api.post("/api/recon-engine/trigger", {"timeout_ms": 5000}, format="json")
    assert r.status_code == 200
    assert {k: r.json()[k] for k in ("processed", "succeeded", "failed")} == {"processed": 2, "succeeded": 2,
                                                                              "failed": 0}
    stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="zzz")
    staff_api.post("/api/recon-engine/trigger/", {}, format="json")
    summary = operator_api.get("/api/recon-engine/summary/?merchant_id=acme").json()
    assert summary["staging_entries"]["by_status"]["PROCESSED"] == 2
    assert summary["staging_entries"]["by_status"]["NEEDS_MANUAL_REVIEW"] == 1
    assert summary["match_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["open_expected_ageing"] == {"<1d": 2, "1-3d": 0, "3-7d": 0, "7-30d": 0, ">30d": 0}
    assert summary["review_queue_ageing"]["<1d"] == 1 and sum(summary["review_queue_ageing"].values()) == 1
    by_account = {r["account_name"]: (r["matched"], r["decided"], r["match_rate"])
                  for r in summary["match_rates"]["by_account"]}
    assert by_account == {"payments": (2, 2, 1.0), "bank": (0, 1, 0.0)}
    assert sum(r["decided"] for r in summary["match_rates"]["by_day"]) == 3
    assert summary["amounts_by_currency"]["USD"]["total"] == "300.00"
    assert operator_api.get("/api/recon-engine/summary/?merchant_id=other").status_code == 404
