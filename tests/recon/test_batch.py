"""The set-based TRANSACTION handler: same outcomes as one by one, a constant number of queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from recon import handlers
from recon.models import StagingEntry, Transaction
from tests.recon.factories import AccountFactory, stage
from tracker import services as tracker_services
from tracker.registry import RunContext
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


def claim_and_batch(n_expected):
    tasks = tracker_services.task_claim(worker_id="batcher", limit=1000)
    assert len(tasks) == n_expected
    ctx = RunContext(worker_id="batcher", heartbeat=lambda: None)
    with CaptureQueriesContext(connection) as queries:
        handlers.StagingEntryHandler().run_batch(tasks, ctx)
    tracker_services.task_complete_many(task_ids=[t.task_id for t in tasks], worker_id="batcher")
    return len(queries)


def test_batch_outcomes_match_one_by_one(ledger, merchant):
    lonely = AccountFactory(merchant=merchant)
    waiting = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="b")
    Worker("w").drain(budget_seconds=10)
    specs = [
        dict(account=ledger.payments, order_id="a"),
        dict(account=ledger.payments, order_id="a"),
        dict(account=ledger.payments, order_id="b"),
        dict(account=ledger.payments, currency="EUR"),
        dict(account=lonely, order_id="c"),
        dict(account=ledger.payments, order_id=None),
    ]
    entries = []
    for spec in specs:
        entries.append(stage(spec.pop("account"), **spec))
    claim_and_batch(len(specs))
    outcomes = []
    for e in entries:
        e.refresh_from_db()
        outcomes.append(e.metadata.get("match_type") or e.metadata["error_type"])
    assert sorted(outcomes) == sorted(
        [
            "NewTransactionGenerated",
            "DuplicateTransactionError",
            "NewTransactionGenerated",
            "CurrencyMismatchError",
            "NoReconRuleFoundError",
            "NewTransactionGenerated",
        ]
    )
    assert Transaction.objects.count() == 3
    waiting.refresh_from_db()
    assert waiting.status == "PENDING"  # re-queued: its expectation appeared
    Worker("w").drain(budget_seconds=10)
    waiting.refresh_from_db()
    assert waiting.metadata["match_type"] == "Fulfilled"


def test_batch_uses_constant_queries(ledger):
    for i in range(5):
        stage(ledger.payments, order_id=f"s{i}")
    small = claim_and_batch(5)
    for i in range(60):
        stage(ledger.payments, order_id=f"l{i}")
    large = claim_and_batch(60)
    assert small == large
    assert StagingEntry.objects.filter(status="PROCESSED").count() == 65
