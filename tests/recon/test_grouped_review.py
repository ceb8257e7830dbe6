"""The review queue for a payout's grouped mismatch: the console page shows the members, their sum, the
confirmation amount and the difference; an operator accepts it with a write-off (recon.write_off permission,
reason required, audited) or splits it (settles the chosen members, the others stay open)."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client

from recon import services
from recon.errors import UnprocessableError
from recon.models import Entry, MerchantMembership, StagingEntry, Transaction
from tests.recon.factories import AccountFactory, ReconRuleFactory, stage
from tracker.models import Transition
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def mismatch(merchant):
    payments, fees = AccountFactory(merchant=merchant), AccountFactory(merchant=merchant)
    bank = AccountFactory(merchant=merchant, account_type="CREDIT_NORMAL")
    ReconRuleFactory(
        merchant=merchant,
        account_one=payments,
        account_two=bank,
        match_mode="one_to_many",
        group_key="payout_id",
        confirmation_key="payout_id",
        difference_account=fees,
    )
    for order, amount in (("a", "60.00"), ("b", "30.00"), ("c", "15.00")):
        stage(payments, order_id=order, amount=amount, metadata={"payout_id": "P1"})
    Worker("setup").drain(budget_seconds=30)
    entry = stage(bank, mode="CONFIRMATION", side="CREDIT", amount="90.00", order_id=None, metadata={"payout_id": "P1"})
    Worker("setup").drain(budget_seconds=30)
    entry.refresh_from_db()
    assert entry.metadata["error_type"] == "MismatchError"
    return type("M", (), {"entry": entry, "bank": bank, "fees": fees})


def members(order_ids):
    return [str(t.pk) for t in Transaction.objects.filter(status="EXPECTED", metadata__order_id__in=order_ids)]


def test_the_page_shows_the_group(staff_user, mismatch):
    client = Client()
    client.force_login(staff_user)
    page = client.get(f"/admin/recon/stagingentry/{mismatch.entry.pk}/group/").content.decode()
    for text in ("105.0000", "90.0000", "-15.0000", ":a", ":b", ":c"):
        assert text in page, text
    detail = client.get(f"/admin/recon/stagingentry/{mismatch.entry.pk}/change/").content.decode()
    assert "3 members, sum 105.0000" in detail


def test_split_settles_the_chosen_members_and_leaves_the_rest_open(staff_user, mismatch):
    with pytest.raises(ValidationError):
        services.staging_entry_resolve_group(
            staging_entry_id=mismatch.entry.pk, by=staff_user, reason=" ", transaction_ids=members(["a", "b"])
        )
    client = Client()
    client.force_login(staff_user)
    r = client.post(
        f"/admin/recon/stagingentry/{mismatch.entry.pk}/group/",
        {"members": members(["a", "b"]), "reason": "c is in the next payout"},
    )
    assert r.status_code == 302
    mismatch.entry.refresh_from_db()
    assert mismatch.entry.status == "PROCESSED" and mismatch.entry.metadata["resolved_by_operator"] is True
    posted = Transaction.objects.filter(status="POSTED").values_list("metadata__order_id", flat=True)
    assert sorted(posted) == ["a", "b"]
    assert Transaction.objects.get(status="EXPECTED").metadata["order_id"] == "c"
    audit = Transition.objects.filter(object_id=str(mismatch.entry.pk), to_status="PROCESSED").get()
    assert "c is in the next payout" in audit.reason and audit.by_user_id == staff_user.pk


def test_write_off_needs_the_permission_and_books_the_difference(django_user_model, merchant, mismatch):
    user = django_user_model.objects.create_user("op", password="pw", is_staff=True)
    MerchantMembership.objects.create(user=user, merchant=merchant, role="operator")
    with pytest.raises(PermissionDenied):
        services.staging_entry_resolve_group(staging_entry_id=mismatch.entry.pk, by=user, reason="fees", write_off=True)
    user.user_permissions.add(Permission.objects.get(codename="write_off"))
    user = django_user_model.objects.get(pk=user.pk)
    with pytest.raises(UnprocessableError):  # outside the rule's (zero) tolerance: a write-off is needed
        services.staging_entry_resolve_group(staging_entry_id=mismatch.entry.pk, by=user, reason="fees")
    services.staging_entry_resolve_group(staging_entry_id=mismatch.entry.pk, by=user, reason="fees", write_off=True)
    assert Transaction.objects.filter(status="POSTED").count() == 3
    assert sum(e.amount for e in Entry.objects.filter(account=mismatch.bank, status="POSTED")) == Decimal("90.00")
    assert sum(e.amount for e in Entry.objects.filter(account=mismatch.fees, status="POSTED")) == Decimal("15.00")
    assert StagingEntry.objects.get(pk=mismatch.entry.pk).status == "PROCESSED"
