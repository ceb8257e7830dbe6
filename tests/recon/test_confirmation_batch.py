"""The set-based CONFIRMATION handler: the same outcomes as one by one in claim order, a constant number of
queries per batch."""

import datetime as dt
from decimal import Decimal
from uuid import UUID

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext

from recon import handlers
from recon.models import ClosedPeriod, Entry, StagingEntry, Transaction
from tests.recon.factories import DAY, AccountFactory, MerchantFactory, ReconRuleFactory, stage
from tracker import services as tracker_services
from tracker.models import Transition
from tracker.registry import RunContext
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


def claim_and_batch(n_expected):
    """Claims every due task and runs them through the set-based CONFIRMATION path (no fallback)."""
    tasks = tracker_services.task_claim(worker_id="batcher", limit=1000)
    assert len(tasks) == n_expected
    ctx = RunContext(worker_id="batcher", heartbeat=lambda: None)
    for model in (StagingEntry, Transaction, Entry):  # the content-type cache lives as long as the process
        ContentType.objects.get_for_model(model)
    with CaptureQueriesContext(connection) as queries:
        handlers.StagingEntryHandler().run_batch(tasks, ctx)
    tracker_services.task_complete_many(task_ids=[t.task_id for t in tasks], worker_id="batcher")
    return len(queries)


def scenario(batched):
    """Every CONFIRMATION outcome in one batch; returns [(outcome, staging status)] in creation order and the
    (logical id -> [(version, status)]) of the merchant's transactions."""
    merchant = MerchantFactory()
    payments = AccountFactory(merchant=merchant)
    other = AccountFactory(merchant=merchant)
    bank = AccountFactory(merchant=merchant, account_type="CREDIT_NORMAL")
    lonely = AccountFactory(merchant=merchant)
    diff = AccountFactory(merchant=merchant)
    ReconRuleFactory(
        merchant=merchant,
        account_one=payments,
        account_two=bank,
        amount_tolerance=Decimal("1.00"),
        difference_account=diff,
        date_window_days=2,
    )
    ReconRuleFactory(merchant=merchant, account_one=other, account_two=bank)
    ClosedPeriod.objects.create(merchant=merchant, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 10, 31))
    for order in ("o1", "o2", "o3", "o4", "o5", "o6", "o7", "o8"):
        stage(payments, order_id=order)
    stage(other, order_id="o7")  # a second expectation for o7 on bank: ambiguous
    stage(other, order_id=8, metadata={"order_id": 8})  # a numeric key value
    Worker("setup").drain(budget_seconds=30)
    specs = [
        dict(order_id="o1"),
        dict(order_id="o1"),  # fulfils, then finds nothing left
        dict(order_id="o2", amount="100.50"),  # within tolerance: difference leg
        dict(order_id="o3", amount="50.00"),
        dict(order_id="o3"),  # mismatch, then nothing EXPECTED
        dict(order_id="o4", currency="EUR"),
        dict(order_id="o5", side="DEBIT"),
        dict(order_id="o6", when=DAY + dt.timedelta(days=5)),
        dict(order_id="o7"),
        dict(order_id="o9"),
        dict(order_id=None),
        dict(order_id="o8", when=DAY - dt.timedelta(days=10)),
        dict(order_id=8, metadata={"order_id": 8}),
        dict(order_id="o8", amount="103.00"),
        dict(order_id="o8", amount="100.20"),
        dict(account=lonely),
    ]
    entries = [
        stage(spec.pop("account", bank), mode="CONFIRMATION", side=spec.pop("side", "CREDIT"), **spec) for spec in specs
    ]
    if batched:
        claim_and_batch(len(specs))
    else:  # batches of one: a worker that claims one task at a time
        Worker("one", batch_size=1).drain(budget_seconds=30)
    outcomes = []
    for e in entries:
        e.refresh_from_db()
        outcomes.append(
            (e.metadata.get("match_type") or e.metadata["error_type"], e.status, e.mismatch_transaction_id is not None)
        )
    # Staging entry ids differ between the two runs: they are compared by their place in `entries`.
    place = {e.pk: i for i, e in enumerate(entries)}

    def where(meta: dict) -> dict:
        source = meta.get("source_staging_entry_id")
        return {**meta, "source_staging_entry_id": place.get(UUID(source), "setup")} if source else meta

    txns = {}
    for t in Transaction.objects.filter(merchant=merchant).order_by("version"):
        key = t.logical_transaction_id.split(":", 1)[1]
        legs = sorted(
            (
                e.account_id == diff.pk,
                e.entry_type,
                e.amount,
                e.status,
                e.currency,
                e.effective_date,
                sorted(where(e.metadata).items(), key=str),
            )
            for e in t.entries.all()
        )
        txns.setdefault(key, []).append(
            (
                t.version,
                t.status,
                t.metadata.get("amount_difference"),
                legs,
                t.metadata,
                t.currency,
                t.amount,
                place.get(t.source_staging_entry_id, "setup"),
                t.rule.account_one_id == payments.pk,
            )
        )
    return outcomes, txns, entries


EXPECTED = [
    ("Fulfilled", "PROCESSED", False),
    ("NoMatchFoundError", "NEEDS_MANUAL_REVIEW", False),
    ("Fulfilled", "PROCESSED", False),
    ("MismatchError", "NEEDS_MANUAL_REVIEW", True),
    ("NoMatchFoundError", "NEEDS_MANUAL_REVIEW", False),
    ("CurrencyMismatchError", "NEEDS_MANUAL_REVIEW", False),
    ("MismatchError", "NEEDS_MANUAL_REVIEW", True),
    ("MismatchError", "NEEDS_MANUAL_REVIEW", True),
    ("AmbiguousMatchError", "NEEDS_MANUAL_REVIEW", False),
    ("NoMatchFoundError", "NEEDS_MANUAL_REVIEW", False),
    ("NoMatchFoundError", "NEEDS_MANUAL_REVIEW", False),
    ("PeriodClosedError", "NEEDS_MANUAL_REVIEW", False),
    ("Fulfilled", "PROCESSED", False),
    ("MismatchError", "NEEDS_MANUAL_REVIEW", True),
    ("NoMatchFoundError", "NEEDS_MANUAL_REVIEW", False),
    ("NoReconRuleFoundError", "NEEDS_MANUAL_REVIEW", False),
]


def test_batch_outcomes_match_one_by_one():
    one_outcomes, one_txns, _ = scenario(False)
    outcomes, txns, entries = scenario(True)
    assert one_outcomes == EXPECTED
    assert outcomes == EXPECTED
    assert txns == one_txns
    assert txns["o2"][1][2] == "0.5000"  # amount_difference; a third leg on the difference account
    assert sum(leg[0] for leg in txns["o2"][1][3]) == 1
    # version 2 of o2: the payments leg carried over from version 1, the bank's leg from the staging entry (its
    # client metadata and its id), the difference leg with the same metadata marked as a difference
    v2 = Transaction.objects.get(source_staging_entry=entries[2])
    v1 = Transaction.objects.get(logical_transaction_id=v2.logical_transaction_id, version=1)
    carried = Entry.objects.get(transaction=v1, status="ARCHIVED", entry_type="DEBIT")
    legs = {e.account_id: e for e in v2.entries.all()}
    assert len(legs) == 3
    mine = legs[carried.account_id]
    assert (mine.amount, mine.entry_type, mine.metadata, mine.effective_date) == (
        carried.amount,
        "DEBIT",
        carried.metadata,
        carried.effective_date,
    )
    own = legs[entries[2].account_id]
    assert own.metadata == {"order_id": "o2", "source_staging_entry_id": str(entries[2].pk)}
    assert (own.amount, own.entry_type, own.effective_date) == (Decimal("100.50"), "CREDIT", entries[2].effective_date)
    difference = next(e for e in legs.values() if e not in (mine, own))
    assert (difference.amount, difference.entry_type) == (Decimal("0.50"), "DEBIT")
    assert difference.metadata == {**own.metadata, "difference": True}
    assert v2.metadata == {**v1.metadata, "amount_difference": "0.5000"}
    assert [version[1] for version in txns["o3"]] == ["MISMATCH"]
    mismatch = Transaction.objects.get(pk=entries[3].mismatch_transaction_id)
    assert entries[3].metadata["error"] == "amount differs: expected 100.0000, got 50.0000"
    assert entries[6].metadata["error"] == "side differs: expected CREDIT, got DEBIT"
    assert entries[7].metadata["error"].startswith("date outside the 2-day window")
    # the audit trail has the same rows as the per-entry path
    history = sorted(Transition.objects.filter(object_id=str(mismatch.pk)).values_list("from_status", "to_status"))
    assert history == [("EXPECTED", "MISMATCH")]
    fulfilled = Transaction.objects.get(source_staging_entry=entries[0])
    old = Transaction.objects.get(logical_transaction_id=fulfilled.logical_transaction_id, version=1)
    assert Transition.objects.filter(object_id=str(old.pk), to_status="ARCHIVED").count() == 1
    for e in Entry.objects.filter(transaction=old):
        assert list(Transition.objects.filter(object_id=str(e.pk)).values_list("to_status", flat=True)) == ["ARCHIVED"]
    assert (
        Transition.objects.filter(
            object_id=str(entries[0].pk), to_status="PROCESSED", reason__startswith="fulfilled "
        ).count()
        == 1
    )


def test_batch_uses_constant_queries(ledger):
    def run(prefix, n):
        for i in range(n):
            stage(ledger.payments, order_id=f"{prefix}{i}")
        Worker("setup").drain(budget_seconds=60)
        for i in range(n):
            stage(
                ledger.bank,
                mode="CONFIRMATION",
                side="CREDIT",
                order_id=f"{prefix}{i}",
                amount="100.00" if i else "90.00",
            )  # one mismatch, the rest exact matches
        stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id=f"{prefix}-none")  # no match
        return claim_and_batch(n + 1)

    small = run("s", 5)
    large = run("l", 60)
    assert small == large
    # COPY statements included (tracker.bulk logs them); the candidates read again after the lock; the old legs
    # archived and the new legs inserted by one statement; the engine's plan settings set and restored (ENGINE_PLAN)
    assert small == 14
    assert StagingEntry.objects.filter(account=ledger.bank, status="PROCESSED").count() == 4 + 59
    assert Transaction.objects.filter(status="MISMATCH").count() == 2


def test_worker_batches_confirmations_without_falling_back(ledger, caplog):
    for i in range(20):
        stage(ledger.payments, order_id=f"w{i}")
    Worker("setup").drain(budget_seconds=60)
    for i in range(20):
        stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id=f"w{i}")
    with caplog.at_level("WARNING", logger="tracker.worker"):
        totals = Worker("w").drain(budget_seconds=60)
    assert totals.succeeded == 20
    assert "one by one" not in caplog.text
    assert StagingEntry.objects.filter(account=ledger.bank, status="PROCESSED").count() == 20


def test_non_string_key_values_match_in_the_batch(ledger, caplog):
    # An object or array as a key value is refused at the door (issue 17, item 11); numbers are key values.
    stage(ledger.payments, order_id="x", metadata={"order_id": 1})
    Worker("setup").drain(budget_seconds=30)
    stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", metadata={"order_id": 1})
    stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="y")
    with caplog.at_level("WARNING", logger="tracker.worker"):
        assert Worker("w").drain(budget_seconds=30).succeeded == 2
    assert "one by one" not in caplog.text
    outcomes = sorted(
        e.metadata.get("match_type") or e.metadata["error_type"]
        for e in StagingEntry.objects.filter(account=ledger.bank)
    )
    assert outcomes == ["Fulfilled", "NoMatchFoundError"]
