"""Grouped matching end to end on PostgreSQL (API.md "Recon rules"): the rule fields and their validation,
one_to_many payouts, many_to_one instalments, confirmation keys by pattern, `metadata.match_group` and
`?match_group=`, re-queues when a group's first member appears. Every transaction balances."""

from collections import defaultdict
from decimal import Decimal

import pytest

from recon.models import Entry, StagingEntry, Transaction
from tests.recon.factories import AccountFactory, stage
from tracker.worker import Worker

pytestmark = pytest.mark.django_db
RULES = "/api/merchants/acme/recon-rules/"


def assert_ledger_balanced():
    totals = defaultdict(Decimal)
    for leg in Entry.objects.exclude(status="ARCHIVED"):
        totals[(leg.transaction_id, leg.currency)] += leg.amount if leg.entry_type == "DEBIT" else -leg.amount
    assert all(v == 0 for v in totals.values()), totals


@pytest.fixture
def accounts(merchant):
    return type(
        "A",
        (),
        {
            name: AccountFactory(
                merchant=merchant, account_name=name, account_type="CREDIT_NORMAL" if name == "bank" else "DEBIT_NORMAL"
            )
            for name in ("payments", "bank", "fees")
        },
    )


def make_rule(api, accounts, **options):
    r = api.post(
        RULES,
        {
            "account_one_id": str(accounts.payments.pk),
            "account_two_id": str(accounts.bank.pk),
            "difference_account_id": str(accounts.fees.pk),
            **options,
        },
        format="json",
    )
    assert r.status_code == 201, r.json()
    return r.json()


def drain():
    Worker("grouped").drain(budget_seconds=60)


def confirm(accounts, amount, **metadata):
    return stage(accounts.bank, mode="CONFIRMATION", side="CREDIT", amount=amount, order_id=None, metadata=metadata)


def test_rule_fields_are_validated_and_returned(operator_api, accounts):
    base = {"account_one_id": str(accounts.payments.pk), "account_two_id": str(accounts.bank.pk)}
    for bad, field in [
        ({"confirmation_key_pattern": "(unclosed"}, "confirmation_key_pattern"),
        ({"confirmation_key_pattern": "no group"}, "confirmation_key_pattern"),
        ({"confirmation_key_pattern": "(a)(b)"}, "confirmation_key_pattern"),
        ({"match_mode": "one_to_many"}, "group_key"),
        ({"match_mode": "many_to_many"}, "match_mode"),
        ({"group_key": "payout_id"}, "group_key"),
        ({"confirmation_key": "bad key!"}, "confirmation_key"),
    ]:
        r = operator_api.post(RULES, {**base, **bad}, format="json")
        assert r.status_code == 400 and field in str(r.json()), (bad, r.json())
    assert operator_api.get(RULES).json()["count"] == 0
    rule = make_rule(
        operator_api,
        accounts,
        match_mode="one_to_many",
        group_key="payout_id",
        confirmation_key="remittance_info",
        confirmation_key_pattern=r"(PO-\d+)",
    )
    assert {k: rule[k] for k in ("match_mode", "group_key", "confirmation_key", "confirmation_key_pattern")} == {
        "match_mode": "one_to_many",
        "group_key": "payout_id",
        "confirmation_key": "remittance_info",
        "confirmation_key_pattern": r"(PO-\d+)",
    }
    assert operator_api.get(RULES).json()["results"][0]["match_mode"] == "one_to_many"


def test_a_payout_settles_its_group_and_books_the_fee_pro_rata(operator_api, accounts):
    make_rule(
        operator_api,
        accounts,
        match_mode="one_to_many",
        group_key="payout_id",
        amount_tolerance_pct="5",
        confirmation_key="remittance_info",
        confirmation_key_pattern=r"(PO-\d+)",
    )
    for order, amount in [("o1", "33.33"), ("o2", "33.33"), ("o3", "33.34"), ("o4", "10.00")]:
        payout = "PO-1" if order != "o4" else "PO-2"
        stage(accounts.payments, order_id=order, amount=amount, metadata={"payout_id": payout})
    drain()
    entry = confirm(accounts, "97.00", remittance_info="payout PO-1 of 2026-11-01")
    drain()
    entry.refresh_from_db()
    assert entry.status == "PROCESSED" and entry.metadata["match_group"] == str(entry.pk)
    posted = Transaction.objects.filter(status="POSTED")
    assert sorted(posted.values_list("metadata__order_id", flat=True)) == ["o1", "o2", "o3"]
    assert set(posted.values_list("version", flat=True)) == {2}
    bank = Entry.objects.filter(account=accounts.bank, status="POSTED")
    fees = Entry.objects.filter(account=accounts.fees, status="POSTED")
    assert sum(e.amount for e in bank) == Decimal("97.00")
    assert sum(e.amount for e in fees) == Decimal("3.00")
    assert sorted(e.amount for e in fees) == [Decimal("1.00"), Decimal("1.00"), Decimal("1.00")]
    assert Transaction.objects.get(metadata__order_id="o4", status="EXPECTED")
    assert_ledger_balanced()
    listed = operator_api.get(f"/api/merchants/acme/transactions/?match_group={entry.pk}").json()
    assert listed["count"] == 3 and {t["metadata"]["match_group"] for t in listed["results"]} == {str(entry.pk)}
    assert operator_api.get("/api/merchants/acme/transactions/?match_group=nope").json()["count"] == 0


def test_a_payout_outside_tolerance_fulfils_nothing_then_waits_for_members(operator_api, accounts):
    make_rule(operator_api, accounts, match_mode="one_to_many", group_key="payout_id", confirmation_key="payout_id")
    early = confirm(accounts, "20.00", payout_id="P7")  # before any member: NoMatchFoundError
    drain()
    early.refresh_from_db()
    assert early.metadata["error_type"] == "NoMatchFoundError"
    stage(accounts.payments, order_id="a", amount="20.00", metadata={"payout_id": "P7"})
    drain()  # the member appears: the payout is re-queued and settles it
    early.refresh_from_db()
    assert early.status == "PROCESSED"
    stage(accounts.payments, order_id="b", amount="5.00", metadata={"payout_id": "P8"})
    stage(accounts.payments, order_id="c", amount="5.00", metadata={"payout_id": "P8"})
    drain()
    wrong = confirm(accounts, "11.00", payout_id="P8")
    drain()
    wrong.refresh_from_db()
    assert wrong.metadata["error_type"] == "MismatchError"
    assert wrong.metadata["group"]["members"] == 2 and wrong.metadata["group"]["difference"] == "1.0000"
    assert Transaction.objects.filter(metadata__payout_id="P8", status="EXPECTED").count() == 2
    assert_ledger_balanced()


def test_instalments_pay_an_expectation_until_it_is_posted(operator_api, accounts):
    make_rule(operator_api, accounts, match_mode="many_to_one")
    stage(accounts.payments, order_id="inv1", amount="100.00")
    drain()
    first = confirm(accounts, "30.00", order_id="inv1")
    drain()
    open_ = Transaction.objects.get(status="EXPECTED")
    assert (open_.version, open_.metadata["paid"], open_.metadata["remaining"]) == (2, "30.0000", "70.0000")
    assert Entry.objects.get(transaction=open_, status="EXPECTED").amount == Decimal("70.00")
    over = confirm(accounts, "70.01", order_id="inv1")
    drain()
    over.refresh_from_db()
    assert over.metadata["error_type"] == "MismatchError"
    assert Transaction.objects.get(status="EXPECTED").pk == open_.pk
    last = confirm(accounts, "70.00", order_id="inv1")
    drain()
    done = Transaction.objects.get(status="POSTED")
    assert (done.version, done.metadata["paid"], done.metadata["remaining"]) == (3, "100.0000", "0.0000")
    assert sum(e.amount for e in Entry.objects.filter(account=accounts.bank, status="POSTED")) == Decimal("100.00")
    first.refresh_from_db(), last.refresh_from_db()
    assert first.metadata["match_group"] == last.metadata["match_group"] == done.metadata["match_group"]
    assert_ledger_balanced()


def test_two_instalments_in_one_batch(operator_api, accounts):
    make_rule(operator_api, accounts, match_mode="many_to_one")
    stage(accounts.payments, order_id="inv1", amount="100.00")
    drain()
    for amount in ("40.00", "60.00"):
        confirm(accounts, amount, order_id="inv1")
    drain()
    assert Transaction.objects.get(status="POSTED").version == 3
    assert StagingEntry.objects.filter(status="PROCESSED", processing_mode="CONFIRMATION").count() == 2
    assert_ledger_balanced()


def test_candidates_of_two_rules_are_ambiguous(operator_api, accounts, merchant):
    make_rule(operator_api, accounts, match_mode="many_to_one")
    other = AccountFactory(merchant=merchant)
    r = operator_api.post(
        RULES,
        {
            "account_one_id": str(other.pk),
            "account_two_id": str(accounts.bank.pk),
            "match_mode": "one_to_many",
            "group_key": "order_id",
        },
        format="json",
    )
    assert r.status_code == 201, r.json()
    stage(accounts.payments, order_id="k1", amount="10.00")
    stage(other, order_id="x", amount="10.00", metadata={"order_id": "k1"})
    drain()
    entry = confirm(accounts, "10.00", order_id="k1")
    drain()
    entry.refresh_from_db()
    assert entry.metadata["error_type"] == "AmbiguousMatchError"


def test_a_group_above_the_cap_is_ambiguous(operator_api, accounts, settings):
    settings.RECON_GROUP_MAX = 2
    make_rule(operator_api, accounts, match_mode="one_to_many", group_key="payout_id", confirmation_key="payout_id")
    for order in ("a", "b", "c"):
        stage(accounts.payments, order_id=order, amount="1.00", metadata={"payout_id": "P"})
    drain()
    entry = confirm(accounts, "3.00", payout_id="P")
    drain()
    entry.refresh_from_db()
    assert entry.metadata["error_type"] == "AmbiguousMatchError"
    assert Transaction.objects.filter(status="POSTED").count() == 0
