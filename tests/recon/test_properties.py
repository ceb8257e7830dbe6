"""Hypothesis, on PostgreSQL: any sequence of TRANSACTION and CONFIRMATION entries leaves every transaction
balanced, every staging entry in exactly one terminal state, and at most one transaction version created per staging
entry; and one batch of N gives the same outcomes and the same ledger as N batches of one (in the engine's order:
TRANSACTION entries first, then CONFIRMATION entries, each in claim order)."""

import datetime as dt
import itertools
import uuid
from collections import defaultdict
from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import example, given
from hypothesis import strategies as st

from recon import engine, services
from recon.models import Entry, StagingEntry, Transaction
from tests.recon.factories import AccountFactory, MerchantFactory, ReconRuleFactory
from tracker import services as tracker_services
from tracker.models import ProcessTracker

# A few fixed amounts so confirmations often agree with an expectation (exactly, or within the 1.00 tolerance).
amounts = st.one_of(
    st.sampled_from([Decimal("10.00"), Decimal("10.50"), Decimal("25.00")]),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=2),
)
step = st.one_of(
    st.tuples(
        st.just("entry"),
        st.sampled_from(["TRANSACTION", "CONFIRMATION"]),
        st.sampled_from(["payments", "bank", "bank", "orphan"]),
        st.sampled_from(["DEBIT", "CREDIT", "CREDIT"]),
        amounts,
        st.sampled_from(["o1", "o2", "o3", "o4", None]),
        st.sampled_from(["USD", "USD", "USD", "EUR"]),
        st.integers(min_value=0, max_value=6),
    ),
    # an expectation on payments or a confirmation on bank that may agree with it
    st.builds(
        lambda kind, amount, order_id, day: ("entry", *kind, amount, order_id, "USD", day),
        st.sampled_from([("TRANSACTION", "payments", "DEBIT"), ("CONFIRMATION", "bank", "CREDIT")]),
        st.sampled_from([Decimal("10.00"), Decimal("10.50"), Decimal("25.00")]),
        st.sampled_from(["o1", "o2", "o3"]),
        st.integers(min_value=0, max_value=3),
    ),
    st.tuples(st.just("drain")),
)


def E(mode, account, side, amount, order_id, currency="USD", day=0) -> tuple:  # noqa: N802 - an entry step
    return ("entry", mode, account, side, Decimal(amount), order_id, currency, day)


@contextmanager
def ordered_ids():
    """Staging entry and task ids in creation order, so both runs claim (and re-queue) in the same order:
    tasks created together (re-queues) share run_after and are claimed by id."""
    counter = itertools.count(1)
    fields = [StagingEntry._meta.pk, ProcessTracker._meta.pk]
    saved = [(f, f.default) for f in fields]
    for f in fields:
        f.default = lambda: uuid.UUID(int=(1 << 120) + next(counter))
        f.__dict__.pop("_get_default", None)  # a cached_property of the default
    try:
        yield
    finally:
        for f, default in saved:
            f.default = default
            f.__dict__.pop("_get_default", None)


def drain(batched: bool) -> None:
    """Claims every due task, runs the claim through the engine as one batch (`batched`) or as batches of one in
    the engine's order, completes the tasks; again until nothing is due (re-queued confirmations)."""
    while tasks := tracker_services.task_claim(worker_id="prop", limit=1000):
        items = [engine.WorkItem(t.payload["staging_entry_id"], t.task_id) for t in tasks]
        modes = {str(t.task_id): t.payload["mode"] for t in tasks}
        with transaction.atomic():
            if batched:
                engine.staging_entries_process(items=items, by="prop")
            else:
                for item in sorted(items, key=lambda i: engine.MODE_ORDER.index(modes[str(i.task_id)])):
                    engine.staging_entries_process(items=[item], by="prop")
            tracker_services.task_complete_many(task_ids=[t.task_id for t in tasks], worker_id="prop")


def run_and_check(steps, tolerance, window, batched: bool) -> tuple[list, dict]:
    """Runs the steps for a new merchant, checks the ledger invariants, returns each staging entry's outcome
    (creation order: status, outcome type, versions it created, the version it put in MISMATCH) and the ledger
    (logical transaction -> its versions with their legs, accounts by name, staging entries by place)."""
    merchant = MerchantFactory()
    accounts = {
        "payments": AccountFactory(merchant=merchant),
        "orphan": AccountFactory(merchant=merchant),
        "bank": AccountFactory(merchant=merchant, account_type="CREDIT_NORMAL"),
    }
    diff = AccountFactory(merchant=merchant)
    ReconRuleFactory(
        merchant=merchant,
        account_one=accounts["payments"],
        account_two=accounts["bank"],
        amount_tolerance=Decimal(tolerance),
        difference_account=diff,
        date_window_days=window,
    )
    staged = []
    for s in steps:
        if s[0] == "drain":
            drain(batched)
            continue
        _, mode, account, side, amount, order_id, currency, day = s
        staged.append(
            services.staging_entry_create(
                account=accounts[account],
                entry_type=side,
                amount=amount,
                currency=currency,
                effective_date=dt.datetime(2026, 11, 1 + day, tzinfo=dt.UTC),
                processing_mode=mode,
                metadata={"order_id": order_id} if order_id else {},
            )[0]
        )
    drain(batched)

    outcomes = []
    for entry in staged:
        entry.refresh_from_db()
        assert entry.status in ("PROCESSED", "NEEDS_MANUAL_REVIEW", "ARCHIVED"), entry
        assert ProcessTracker.objects.get(pk=entry.task_id).status == "COMPLETED"
        created = list(Transaction.objects.filter(source_staging_entry=entry).values_list("version", "status"))
        assert len(created) <= 1
        assert ("match_type" in entry.metadata) == (entry.status == "PROCESSED")
        assert ("error_type" in entry.metadata) == (entry.status == "NEEDS_MANUAL_REVIEW")
        mismatch = entry.mismatch_transaction
        outcomes.append(
            (
                entry.status,
                entry.metadata.get("match_type") or entry.metadata.get("error_type"),
                created,
                (mismatch.version, mismatch.status) if mismatch else None,
            )
        )
    open_versions = defaultdict(int)
    for txn in Transaction.objects.filter(merchant=merchant).prefetch_related("entries"):
        totals = defaultdict(Decimal)
        for e in txn.entries.all():
            totals[e.currency] += e.amount if e.entry_type == "DEBIT" else -e.amount
            if txn.status == "ARCHIVED":
                assert e.status == "ARCHIVED"
            if txn.status == "POSTED":
                assert e.status == "POSTED"
        assert all(v == 0 for v in totals.values()), (txn, dict(totals))
        assert txn.entries.count() >= 2
        if txn.status != "ARCHIVED":
            open_versions[txn.logical_transaction_id] += 1
    assert all(n == 1 for n in open_versions.values())
    assert not Entry.objects.filter(account__merchant=merchant, amount__lte=0).exists()
    return outcomes, ledger_of(merchant, {**accounts, "difference": diff}, staged)


def ledger_of(merchant, accounts: dict, staged: list) -> dict:
    name = {a.pk: n for n, a in accounts.items()}
    place = {e.pk: i for i, e in enumerate(staged)}
    ledger = defaultdict(list)
    for txn in Transaction.objects.filter(merchant=merchant).order_by("version").prefetch_related("entries"):
        legs = sorted(
            (name[e.account_id], e.entry_type, e.amount, e.currency, e.status, e.effective_date)
            for e in txn.entries.all()
        )
        key = txn.logical_transaction_id.split(":", 1)[1]
        ledger[key if key in ("o1", "o2", "o3", "o4") else place.get(txn.source_staging_entry_id)].append(
            (
                txn.version,
                txn.status,
                txn.amount,
                txn.metadata.get("amount_difference"),
                place.get(txn.source_staging_entry_id),
                legs,
            )
        )
    return dict(ledger)


@pytest.mark.django_db
@given(
    steps=st.lists(step, min_size=1, max_size=14),
    tolerance=st.sampled_from(["0", "1.00"]),
    window=st.sampled_from([None, 2]),
)
@example(
    steps=[
        E("TRANSACTION", "payments", "DEBIT", "10.00", "o1"),
        E("TRANSACTION", "payments", "DEBIT", "25.00", "o2"),
        E("TRANSACTION", "payments", "DEBIT", "10.00", "o3"),
        E("TRANSACTION", "payments", "DEBIT", "10.00", "o4"),
        ("drain",),
        E("CONFIRMATION", "bank", "CREDIT", "10.00", "o1"),  # fulfils
        E("CONFIRMATION", "bank", "CREDIT", "10.00", "o1"),  # then nothing EXPECTED is left
        E("CONFIRMATION", "bank", "CREDIT", "25.50", "o2"),  # within tolerance: difference leg
        E("CONFIRMATION", "bank", "CREDIT", "10.00", "o3", day=3),  # outside the window: MISMATCH
        E("CONFIRMATION", "bank", "CREDIT", "10.00", "o3"),  # then nothing EXPECTED is left
        E("CONFIRMATION", "bank", "CREDIT", "10.00", "o4", day=2),  # on the window's edge: fulfils
        E("CONFIRMATION", "bank", "DEBIT", "10.00", "o1"),
    ],
    tolerance="1.00",
    window=2,
)
def test_one_batch_of_n_gives_the_ledger_of_n_batches_of_one(steps, tolerance, window):
    results = {}
    with ordered_ids():
        for batched in (False, True):
            with transaction.atomic():
                results[batched] = run_and_check(steps, tolerance, window, batched)
                transaction.set_rollback(True)
    assert results[True] == results[False]
