"""CSV rows that are hostile or careless (issue 17, items 4, 5 and 11): each is a row error with a clear text,
the other rows are imported; amounts parse the same way in the CSV and the API."""

import pytest

from recon.ingest import ingest_csv
from recon.models import StagingEntry

HEADER = "order_id,amount,currency,transaction_date,type\n"


def _import(ledger, rows: list[str]) -> dict:
    return ingest_csv(account=ledger.payments, lines=[HEADER, *rows], processing_mode="TRANSACTION",
                      source_file="h.csv", chunk_rows=3)


@pytest.mark.parametrize("amount", ["1,000.00", "5_000", "\u0661\u0660\u0660", "1e3", "1 000", "0x10"])
def test_non_plain_amounts_are_refused_alike(ledger, operator_api, amount):
    report = _import(ledger, [f"a1,{'\"' + amount + '\"' if ',' in amount else amount},USD,2026-11-01,Payment\n",
                              "a2,1000.00,USD,2026-11-01,Payment\n"])
    assert (report["successful_ingestions"], report["failed_ingestions"]) == (1, 1)
    assert report["errors"][0]["error_details"].startswith(f"amount {amount!r} is not a number")
    # The API says the same of the same text.
    resp = operator_api.post(f"/api/accounts/{ledger.payments.pk}/staging-entries/",
                             {"entry_type": "DEBIT", "amount": amount, "currency": "USD", "effective_date": "2026-11-01",
                              "processing_mode": "TRANSACTION"}, format="json")
    assert resp.status_code == 400 and resp.json()["details"]["amount"][0].startswith("A valid decimal number")


def test_a_too_long_order_id_is_a_row_error(ledger):
    report = _import(ledger, [f"{'x' * 201},1.00,USD,2026-11-01,Payment\n", f"{'y' * 200},1.00,USD,2026-11-01,Payment\n"])
    assert (report["successful_ingestions"], report["failed_ingestions"]) == (1, 1)
    assert "order_id is longer than 200 characters" in report["errors"][0]["error_details"]
    assert len(report["errors"][0]["row_data"]["order_id"]) == 203  # shortened in the report


def test_formula_like_text_is_stored_as_text(ledger, operator_api):
    formula = "=cmd|' /C calc'!A0"
    report = _import(ledger, [f"\"{formula}\",1.00,USD,2026-11-01,Payment\n", "@SUM(1+1),2.00,USD,2026-11-01,Payment\n"])
    assert report["successful_ingestions"] == 2
    stored = sorted(StagingEntry.objects.values_list("metadata__order_id", flat=True))
    assert stored == ["=cmd|' /C calc'!A0", "@SUM(1+1)"]
    listed = operator_api.get(f"/api/accounts/{ledger.payments.pk}/staging-entries/").json()["results"]
    assert sorted(e["metadata"]["order_id"] for e in listed) == stored
