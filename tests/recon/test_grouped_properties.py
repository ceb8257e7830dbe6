"""Hypothesis, on PostgreSQL, for grouped matching: random payouts (one_to_many, with fees inside and outside the
tolerance), partial payments (many_to_one) and arrival orders leave every transaction balanced, each expectation
fulfilled at most once (one open version per logical transaction, at most one POSTED version), every staging
entry in one terminal state; and one batch of N gives the outcomes and the ledger of N batches of one (in the
engine's order, as tests/recon/test_properties.py)."""

import datetime as dt
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import given, settings
from hypothesis import strategies as st

from recon import services
from recon.models import Entry, Transaction
from tests.recon.factories import AccountFactory, MerchantFactory, ReconRuleFactory
from tests.recon.test_properties import drain, ordered_ids

step = st.one_of(
    # a payment of a payout (one_to_many rule: account "payments", group payout_id)
    st.tuples(
        st.just("payment"),
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from(["P1", "P2"]),
        st.sampled_from([Decimal("10.00"), Decimal("20.00"), Decimal("0.01")]),
    ),
    # a payout: the sum of some members, less a fee (2% tolerance), or just wrong
    st.tuples(
        st.just("payout"),
        st.sampled_from(["P1", "P2", "P3"]),
        st.sampled_from(
            [
                Decimal("10.00"),
                Decimal("20.00"),
                Decimal("29.40"),
                Decimal("30.00"),
                Decimal("39.99"),
                Decimal("50.00"),
                Decimal("25.00"),
            ]
        ),
    ),
    # an invoice (many_to_one rule: account "invoices") and its instalments
    st.tuples(
        st.just("invoice"), st.sampled_from(["i1", "i2"]), st.sampled_from([Decimal("100.00"), Decimal("50.00")])
    ),
    st.tuples(
        st.just("instalment"),
        st.sampled_from(["i1", "i2"]),
        st.sampled_from(
            [
                Decimal("25.00"),
                Decimal("50.00"),
                Decimal("49.99"),
                Decimal("75.00"),
                Decimal("100.00"),
                Decimal("120.00"),
            ]
        ),
    ),
    st.tuples(st.just("drain")),
)


def run(steps, batched: bool):
    merchant = MerchantFactory()
    acc = {
        n: AccountFactory(merchant=merchant, account_type="CREDIT_NORMAL" if n == "bank" else "DEBIT_NORMAL")
        for n in ("payments", "invoices", "bank", "fees")
    }
    ReconRuleFactory(
        merchant=merchant,
        account_one=acc["payments"],
        account_two=acc["bank"],
        match_mode="one_to_many",
        group_key="payout_id",
        confirmation_key="payout_ref",
        amount_tolerance_pct=Decimal("2"),
        difference_account=acc["fees"],
    )
    ReconRuleFactory(
        merchant=merchant,
        account_one=acc["invoices"],
        account_two=acc["bank"],
        match_mode="many_to_one",
        confirmation_key="invoice_ref",
        amount_tolerance=Decimal("0.01"),
        difference_account=acc["fees"],
    )
    staged = []
    for s in steps:
        kind = s[0]
        if kind == "drain":
            drain(batched)
            continue
        if kind == "payment":
            account, side, amount, meta = "payments", "DEBIT", s[3], {"order_id": s[1], "payout_id": s[2]}
        elif kind == "payout":
            account, side, amount, meta = "bank", "CREDIT", s[2], {"payout_ref": s[1]}
        elif kind == "invoice":
            account, side, amount, meta = "invoices", "DEBIT", s[2], {"order_id": s[1]}
        else:
            account, side, amount, meta = "bank", "CREDIT", s[2], {"invoice_ref": s[1]}
        staged.append(
            services.staging_entry_create(
                account=acc[account],
                entry_type=side,
                amount=amount,
                currency="USD",
                effective_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
                processing_mode="TRANSACTION" if account in ("payments", "invoices") else "CONFIRMATION",
                metadata=meta,
            )[0]
        )
    drain(batched)
    place = {e.pk: i for i, e in enumerate(staged)}
    name = {a.pk: n for n, a in acc.items()}
    outcomes = []
    for entry in staged:
        entry.refresh_from_db()
        assert entry.status in ("PROCESSED", "NEEDS_MANUAL_REVIEW"), entry
        outcomes.append(
            (
                entry.status,
                entry.metadata.get("match_type") or entry.metadata.get("error_type"),
                sorted(
                    Transaction.objects.filter(source_staging_entry=entry)
                    .values_list("logical_transaction_id", flat=True)
                    .distinct()
                )
                != [],
            )
        )
    ledger, open_versions, posted = defaultdict(list), defaultdict(int), defaultdict(int)
    for txn in Transaction.objects.filter(merchant=merchant).order_by("version").prefetch_related("entries"):
        legs = [e for e in txn.entries.all() if e.status != "ARCHIVED"]
        assert sum(e.amount if e.entry_type == "DEBIT" else -e.amount for e in legs) == 0, txn
        assert all(e.amount > 0 for e in txn.entries.all())
        if txn.status != "ARCHIVED":
            open_versions[txn.logical_transaction_id] += 1
        posted[txn.logical_transaction_id] += txn.status == "POSTED"
        group = txn.metadata.get("match_group")
        account_one, key = txn.logical_transaction_id.split(":", 1)
        ledger[(name[uuid.UUID(account_one)], key)].append(
            (
                txn.version,
                txn.status,
                txn.amount,
                {k: txn.metadata.get(k) for k in ("paid", "remaining", "amount_difference")},
                place.get(group and _uuid(group), "txn" if group else None),
                sorted((name[e.account_id], e.entry_type, e.amount, e.status) for e in txn.entries.all()),
            )
        )
    assert all(n == 1 for n in open_versions.values())
    assert all(n <= 1 for n in posted.values())
    # a payout's group: what it posts on the bank adds up to its amount
    for entry in staged:
        if entry.status == "PROCESSED" and "payout_ref" in entry.metadata:
            members = Transaction.objects.filter(metadata__match_group=str(entry.pk))
            bank = Entry.objects.filter(transaction__in=members, account=acc["bank"], status="POSTED")
            assert sum(e.amount for e in bank) == entry.amount
    return outcomes, dict(ledger)


def _uuid(text):
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


@pytest.mark.django_db
@settings(max_examples=40, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=14))
def test_grouped_one_batch_of_n_gives_the_ledger_of_n_batches_of_one(steps):
    results = {}
    with ordered_ids():
        for batched in (False, True):
            with transaction.atomic():
                results[batched] = run(steps, batched)
                transaction.set_rollback(True)
    assert results[True] == results[False]
