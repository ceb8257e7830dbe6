"""Bad input is a 400 with a clear message, never a 500 nor a debug page (issue 17, items 3, 4 and 11)."""

import json

import pytest

from recon.models import ReconRule, StagingEntry


def _entry(**overrides):
    return {"entry_type": "DEBIT", "amount": "10.00", "currency": "USD", "effective_date": "2026-11-01",
            "processing_mode": "TRANSACTION", **overrides}


def _post_raw(api, path: str, text: str):
    return api.generic("POST", path, text.encode("utf-8", "surrogatepass"), content_type="application/json")


@pytest.mark.parametrize("metadata, says", [
    ({"order_id": "A\u0000B"}, "NUL"),
    ({"k\u0000": "v"}, "NUL"),
    ({"order_id": "\ud800"}, "surrogate"),
    ({"\udfff": 1}, "surrogate"),
    ({"nested": [{"deep": "x\u0000"}]}, "nested[0].deep"),
])
def test_unstorable_text_in_metadata_is_a_400(operator_api, ledger, metadata, says):
    body = json.dumps(_entry(metadata=metadata))  # \\u escapes, as a client sends them
    resp = _post_raw(operator_api, f"/api/accounts/{ledger.payments.pk}/staging-entries/", body)
    assert resp.status_code == 400, resp.content
    assert resp.json()["code"] in ("parse_error", "validation_error") and says in resp.json()["error"]
    assert not StagingEntry.objects.exists()


def test_unstorable_text_in_names_and_paths_is_a_400(staff_api, operator_api, ledger):
    resp = _post_raw(staff_api, "/api/merchants/", json.dumps({"merchant_name": "Acme\u0000"}))
    assert resp.status_code == 400 and "NUL" in resp.json()["error"]
    for path in ("/api/merchants/%00/", "/api/merchants/?page=%00", "/api/jobs/?job_type=%00"):
        resp = staff_api.get(path)
        assert resp.status_code == 400, path
        assert resp.json()["code"] == "validation_error" and "NUL" in resp.json()["error"]


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deeply_nested_json_is_a_400(operator_api, ledger, depth):
    body = json.dumps(_entry())[:-1] + ', "metadata": ' + "[" * depth + "]" * depth + "}"
    resp = _post_raw(operator_api, f"/api/accounts/{ledger.payments.pk}/staging-entries/", body)
    assert resp.status_code == 400
    assert "nested deeper than 64 levels" in resp.json()["error"]
    assert not StagingEntry.objects.exists()


def test_integers_out_of_range_are_a_400(staff_api, ledger):
    path = f"/api/merchants/{ledger.merchant.pk}/recon-rules/"
    ledger.rule.delete()
    resp = staff_api.post(path, {"account_one_id": str(ledger.payments.pk), "account_two_id": str(ledger.bank.pk),
                                 "date_window_days": 1_000_000_000_000}, format="json")
    assert resp.status_code == 400 and "date_window_days" in resp.json()["error"]
    assert not ReconRule.objects.exists()
    resp = _post_raw(staff_api, path, '{"account_one_id": "x", "date_window_days": 1' + "0" * 5000 + "}")
    assert resp.status_code == 400


def test_page_size_must_be_a_positive_integer(staff_api, ledger):
    for bad in ("abc", "0", "-1", "1.5", "\u0663"):
        resp = staff_api.get(f"/api/merchants/?page_size={bad}")
        assert resp.status_code == 400, bad
        assert resp.json()["details"] == {"page_size": ["A positive integer is required."]}
    assert staff_api.get("/api/merchants/?page_size=100000").json()["count"] == 1  # capped at the maximum


def test_order_id_too_long_or_not_a_scalar_is_refused(operator_api, ledger):
    path = f"/api/accounts/{ledger.payments.pk}/staging-entries/"
    resp = operator_api.post(path, _entry(metadata={"order_id": "x" * 201}), format="json")
    assert resp.status_code == 400 and "longer than 200 characters" in resp.json()["error"]
    resp = operator_api.post(path, _entry(metadata={"order_id": {"a": 1}}), format="json")
    assert resp.status_code == 400 and "not a JSON object" in resp.json()["error"]
    # Any rule's match key, not only order_id.
    ReconRule.objects.filter(pk=ledger.rule.pk).update(match_key="ref")
    resp = operator_api.post(path, _entry(metadata={"ref": "y" * 201}), format="json")
    assert resp.status_code == 400 and "ref is longer than 200" in resp.json()["error"]
    assert not StagingEntry.objects.exists()
    assert operator_api.post(path, _entry(metadata={"order_id": "x" * 200}), format="json").status_code == 201


def test_metadata_is_capped(operator_api, ledger, settings):
    settings.METADATA_MAX_BYTES = 1024
    path = f"/api/accounts/{ledger.payments.pk}/staging-entries/"
    resp = operator_api.post(path, _entry(metadata={"note": "n" * 2000}), format="json")
    assert resp.status_code == 400 and "at most 1024 are allowed" in resp.json()["error"]
    assert operator_api.post(path, _entry(metadata={"note": "n" * 900}), format="json").status_code == 201


def test_default_metadata_cap_is_64_kib(operator_api, ledger):
    resp = operator_api.post(f"/api/accounts/{ledger.payments.pk}/staging-entries/",
                             _entry(metadata={"note": "n" * (9 * 1024 * 1024)}), format="json")
    assert resp.status_code == 400 and "65536" in resp.json()["error"]
