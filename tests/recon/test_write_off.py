"""Forced match beyond tolerance booked as a write-off (API.md "Staging entries", `resolve` with `write_off`):
the service, the API and its permission, reason and audit."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db.models import Sum

from recon.models import Entry, StagingEntry, Transaction
from tests.recon.factories import AccountFactory, stage
from tracker import audit
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


def drain():
    Worker("write-off-test").drain(budget_seconds=20)


def grant_write_off(user):
    user.user_permissions.add(Permission.objects.get(codename="write_off", content_type__app_label="recon"))


@pytest.fixture
def mismatch(ledger):
    """An expectation of 100.00 (order o1) and a confirmation of 97.50 with another key in review."""
    stage(ledger.payments, amount="100.00", order_id="o1")
    drain()
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="97.50", order_id="o1-typo")
    drain()
    confirmation.refresh_from_db()
    assert confirmation.status == "NEEDS_MANUAL_REVIEW"
    return confirmation, Entry.objects.get(status="EXPECTED")


def balanced(txn: Transaction) -> bool:
    legs = Entry.objects.filter(transaction=txn)
    debit = legs.filter(entry_type="DEBIT").aggregate(s=Sum("amount"))["s"] or 0
    credit = legs.filter(entry_type="CREDIT").aggregate(s=Sum("amount"))["s"] or 0
    return debit == credit


def test_outside_tolerance_is_422_without_write_off(operator_api, mismatch):
    confirmation, expected = mismatch
    r = operator_api.post(f"/api/staging-entries/{confirmation.pk}/resolve/",
                          {"action": "match", "entry_id": str(expected.pk)}, format="json")
    assert r.status_code == 422 and r.json()["code"] == "outside_tolerance"
    assert StagingEntry.objects.get(pk=confirmation.pk).status == "NEEDS_MANUAL_REVIEW"


def test_write_off_needs_the_permission_a_reason_and_a_difference_account(operator, operator_api, ledger, mismatch):
    confirmation, expected = mismatch
    url = f"/api/staging-entries/{confirmation.pk}/resolve/"
    body = {"action": "match", "entry_id": str(expected.pk), "write_off": True, "reason": "bank fee"}
    writeoffs = AccountFactory(merchant=ledger.merchant, account_name="write-offs")
    no_perm = operator_api.post(url, {**body, "difference_account_id": str(writeoffs.pk)}, format="json")
    assert no_perm.status_code == 403
    grant_write_off(operator)
    no_reason = operator_api.post(url, {**body, "reason": "", "difference_account_id": str(writeoffs.pk)},
                                  format="json")
    assert no_reason.status_code == 400
    no_account = operator_api.post(url, body, format="json")  # the rule has no difference account
    assert no_account.status_code == 400 and "difference_account_id" in no_account.json()["details"]
    eur = AccountFactory(merchant=ledger.merchant, currency="EUR")
    other = operator_api.post(url, {**body, "difference_account_id": str(eur.pk)}, format="json")
    assert other.status_code == 400
    assert StagingEntry.objects.get(pk=confirmation.pk).status == "NEEDS_MANUAL_REVIEW"
    assert not Transaction.objects.filter(status="POSTED").exists()

    done = operator_api.post(url, {**body, "difference_account_id": str(writeoffs.pk)}, format="json")
    assert done.status_code == 200, done.json()
    assert done.json()["status"] == "PROCESSED"
    write_off = done.json()["metadata"]["write_off"]
    assert write_off["amount"] == "2.5000" and write_off["reason"] == "bank fee" and write_off["by"] == "operator"
    posted = Transaction.objects.get(status="POSTED")
    assert balanced(posted) and posted.metadata["amount_difference"] == "-2.5000"
    leg = Entry.objects.get(transaction=posted, account=writeoffs)
    assert (leg.entry_type, leg.amount, leg.status) == ("CREDIT", Decimal("2.5"), "POSTED")
    row = audit.history(StagingEntry.objects.get(pk=confirmation.pk))[-1]
    assert row.by == "operator" and row.to_status == "PROCESSED"
    assert "write-off of 2.5000 USD to write-offs" in row.reason and row.reason.endswith("bank fee")


def test_write_off_books_on_the_rule_difference_account(staff_user, ledger, mismatch):
    from recon import services

    confirmation, expected = mismatch
    fees = AccountFactory(merchant=ledger.merchant, account_name="fees")
    ledger.rule.difference_account = fees
    ledger.rule.save()
    other = AccountFactory(merchant=ledger.merchant)
    with pytest.raises(Exception) as refused:  # the rule decides the account
        services.staging_entry_resolve(staging_entry_id=confirmation.pk, action="match", entry_id=expected.pk,
                                       by=staff_user, write_off=True, reason="fee",
                                       difference_account_id=other.pk)
    assert "difference_account_id" in str(refused.value)
    entry = services.staging_entry_resolve(staging_entry_id=confirmation.pk, action="match", entry_id=expected.pk,
                                           by=staff_user, write_off=True, reason="fee")
    assert entry.status == "PROCESSED" and entry.metadata["write_off"]["account_id"] == str(fees.pk)
    posted = Transaction.objects.get(status="POSTED")
    assert balanced(posted) and Entry.objects.get(transaction=posted, account=fees).amount == Decimal("2.5")


def test_within_tolerance_needs_no_write_off(staff_user, ledger):
    from recon import services

    fees = AccountFactory(merchant=ledger.merchant, account_name="fees")
    ledger.rule.difference_account, ledger.rule.amount_tolerance = fees, Decimal("5")
    ledger.rule.save()
    stage(ledger.payments, amount="100.00", order_id="o1")
    drain()
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="97.50", order_id="other")
    drain()
    expected = Entry.objects.get(status="EXPECTED")
    entry = services.staging_entry_resolve(staging_entry_id=confirmation.pk, action="match", entry_id=expected.pk,
                                           by=staff_user)
    assert entry.status == "PROCESSED" and "write_off" not in entry.metadata
