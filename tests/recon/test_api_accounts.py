import pytest

from recon.models import Account, Merchant, ReconRule
from tests.recon.factories import AccountFactory, stage
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


def test_staff_creates_merchant_with_and_without_id(staff_api):
    r = staff_api.post("/api/merchants/", {"merchant_id": "shop", "merchant_name": "Shop"}, format="json")
    assert r.status_code == 201 and r.json()["merchant_id"] == "shop"
    r = staff_api.post("/api/merchants", {"merchant_name": "Generated"}, format="json")
    assert r.status_code == 201 and r.json()["merchant_id"]
    assert Merchant.objects.count() == 2


def test_merchant_validation_and_permissions(staff_api, operator_api, anon_api, merchant):
    r = staff_api.post("/api/merchants/", {"merchant_name": ""}, format="json")
    assert r.status_code == 400 and r.json()["code"] == "validation_error" and "merchant_name" in r.json()["details"]
    assert operator_api.post("/api/merchants/", {"merchant_name": "x"}, format="json").status_code == 403
    assert anon_api.get("/api/merchants/").status_code == 401


def test_merchant_visibility(operator_api, other_merchant_operator_api, merchant):
    assert operator_api.get("/api/merchants/acme/").status_code == 200
    assert operator_api.get("/api/merchants/acme").status_code == 200
    assert [m["merchant_id"] for m in operator_api.get("/api/merchants/").json()["results"]] == ["acme"]
    r = other_merchant_operator_api.get("/api/merchants/acme/")
    assert r.status_code == 404 and r.json() == {"error": "Merchant not found.", "code": "not_found", "details": {}}


def test_account_create_list_and_balances(operator_api, merchant):
    r = operator_api.post(
        "/api/merchants/acme/accounts/",
        {"account_name": "cash", "account_type": "DEBIT_NORMAL", "currency": "USD", "initial_balance": 12.5},
        format="json",
    )
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["initial_balance"] == "12.50" and body["balances"] == {
        "posted_balance": "12.50",
        "pending_balance": "12.50",
        "available_balance": "12.50",
    }
    listing = operator_api.get("/api/merchants/acme/accounts").json()
    assert listing["count"] == 1 and listing["results"][0]["account_id"] == body["account_id"]
    r = operator_api.get(f"/api/accounts/{body['account_id']}/balances/")
    assert r.json() == {
        "account_id": body["account_id"],
        "currency": "USD",
        "posted_balance": "12.50",
        "pending_balance": "12.50",
        "available_balance": "12.50",
    }


@pytest.mark.parametrize(
    "payload",
    [
        {"account_type": "DEBIT_NORMAL", "currency": "USD"},
        {"account_name": "x", "account_type": "SIDEWAYS", "currency": "USD"},
        {"account_name": "x", "account_type": "DEBIT_NORMAL", "currency": "ZZZ"},
        {"account_name": "x", "account_type": "DEBIT_NORMAL", "currency": "USD", "initial_balance": "abc"},
    ],
)
def test_account_validation(operator_api, merchant, payload):
    r = operator_api.post("/api/merchants/acme/accounts/", payload, format="json")
    assert r.status_code == 400 and r.json()["code"] == "validation_error"


def test_account_unknown_merchant_viewer_and_stranger(operator_api, viewer_api, other_merchant_operator_api, merchant):
    payload = {"account_name": "x", "account_type": "DEBIT_NORMAL", "currency": "USD"}
    assert operator_api.post("/api/merchants/nope/accounts/", payload, format="json").status_code == 404
    assert viewer_api.post("/api/merchants/acme/accounts/", payload, format="json").status_code == 403
    assert other_merchant_operator_api.post("/api/merchants/acme/accounts/", payload, format="json").status_code == 404


def test_account_rename_and_delete(operator_api, viewer_api, merchant):
    account = AccountFactory(merchant=merchant)
    url = f"/api/merchants/acme/accounts/{account.pk}/"
    r = operator_api.put(url, {"account_name": "renamed", "currency": "EUR"}, format="json")
    assert r.status_code == 200 and r.json()["account_name"] == "renamed" and r.json()["currency"] == "USD"
    assert (
        operator_api.patch(url.rstrip("/"), {"account_name": "again"}, format="json").json()["account_name"] == "again"
    )
    assert viewer_api.delete(url).status_code == 403
    assert operator_api.delete(url).status_code == 204
    assert not Account.objects.exists()
    assert operator_api.delete(url).status_code == 404
    assert operator_api.get("/api/accounts/not-a-uuid/balances/").status_code == 404


def test_account_with_entries_cannot_be_deleted(operator_api, ledger):
    stage(ledger.payments)
    Worker("w").drain(budget_seconds=10)
    ReconRule.objects.all().delete()
    r = operator_api.delete(f"/api/merchants/acme/accounts/{ledger.payments.pk}/")
    assert r.status_code == 409


def test_recon_rule_create_list_delete(operator_api, merchant):
    one, two, diff = (AccountFactory(merchant=merchant) for _ in range(3))
    r = operator_api.post(
        "/api/merchants/acme/recon-rules/",
        {
            "account_one_id": str(one.pk),
            "account_two_id": str(two.pk),
            "amount_tolerance": "0.5",
            "difference_account_id": str(diff.pk),
            "date_window_days": 3,
        },
        format="json",
    )
    assert r.status_code == 201, r.json()
    rule = r.json()
    assert rule["match_key"] == "order_id" and rule["amount_tolerance"] == "0.50" and rule["date_window_days"] == 3
    assert operator_api.get("/api/merchants/acme/recon-rules").json()["count"] == 1
    assert operator_api.delete(f"/api/merchants/acme/recon-rules/{rule['id']}/").status_code == 204
    assert operator_api.delete(f"/api/merchants/acme/recon-rules/{rule['id']}/").status_code == 404
    assert operator_api.delete("/api/merchants/acme/recon-rules/123/").status_code == 404


def test_recon_rule_validation(operator_api, merchant):
    one, two = AccountFactory(merchant=merchant), AccountFactory(merchant=merchant)
    eur = AccountFactory(merchant=merchant, currency="EUR")
    url = "/api/merchants/acme/recon-rules/"

    def post(**body):
        return operator_api.post(url, body, format="json")

    assert post(account_one_id=str(one.pk), account_two_id=str(one.pk)).status_code == 400
    assert post(account_one_id=str(one.pk), account_two_id=str(eur.pk)).status_code == 400
    assert post(account_one_id=str(one.pk), account_two_id=str(two.pk), amount_tolerance="-1").status_code == 400
    assert post(account_one_id=str(one.pk), account_two_id=str(two.pk), amount_tolerance="1").status_code == 400
    assert post(account_one_id=str(one.pk), account_two_id="00000000-0000-0000-0000-000000000000").status_code == 404
    other = AccountFactory()
    assert post(account_one_id=str(one.pk), account_two_id=str(other.pk)).status_code == 404
    assert post(account_one_id=str(one.pk), account_two_id=str(two.pk)).status_code == 201
    assert post(account_one_id=str(one.pk), account_two_id=str(two.pk)).status_code == 400


def test_negative_initial_balance_and_four_decimals(operator_api, merchant):
    r = operator_api.post(
        "/api/merchants/acme/accounts/",
        {
            "account_name": "overdraft",
            "account_type": "CREDIT_NORMAL",
            "currency": "EUR",
            "initial_balance": "-50.1234",
        },
        format="json",
    )
    assert r.status_code == 201 and r.json()["initial_balance"] == "-50.1234"
    assert r.json()["balances"]["available_balance"] == "-50.1234"
