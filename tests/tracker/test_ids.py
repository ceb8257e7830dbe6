"""Primary keys of the hot tables are time-ordered UUIDv7 (tracker.ids.uuid7)."""

import time
import uuid
from decimal import Decimal

import pytest

from recon import services as recon_services
from recon.models import Entry, StagingEntry, Transaction
from tests.recon.factories import DAY, AccountFactory, MerchantFactory, ReconRuleFactory, stage
from tracker import ids
from tracker import services as tracker_services
from tracker.models import ProcessTracker
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


def test_helper_returns_a_plain_version_7_uuid():
    a = ids.uuid7()
    time.sleep(0.002)
    b = ids.uuid7()
    assert type(a) is uuid.UUID and (a.version, a.variant) == (7, uuid.RFC_4122)
    assert a < b
    assert hash(a) == hash(uuid.UUID(str(a))) and a == uuid.UUID(str(a))
    assert len({ids.uuid7() for _ in range(10000)}) == 10000


def test_a_run_of_texts_is_ordered_unique_version_7_and_apart_from_other_runs():
    run, other = ids.uuid7_texts(5000), ids.uuid7_texts(5000)
    assert run == sorted(run) and len(set(run) | set(other)) == 10000
    assert all(uuid.UUID(t).version == 7 and str(uuid.UUID(t)) == t for t in run[:3] + run[-3:])
    assert ids.uuid7_texts(0) == []
    with pytest.raises(ValueError):
        ids.uuid7_texts(ids.RUN_MAX)


def _round(payments, order_id: str) -> dict:
    """One staged entry, processed: its task, the staging entry, the new transaction and its two entries."""
    entry = stage(payments, order_id=order_id)
    totals = Worker("ids-worker").drain(budget_seconds=20)
    assert (totals.processed, totals.succeeded) == (1, 1)
    txn = Transaction.objects.get(source_staging_entry=entry)
    legs = list(Entry.objects.filter(transaction=txn))
    assert len(legs) == 2
    return {
        "task": [ProcessTracker.objects.get(pk=entry.task_id).pk],
        "staging": [entry.pk],
        "transaction": [txn.pk],
        "entry": [e.pk for e in legs],
    }


def test_new_rows_get_time_ordered_version_7_ids():
    merchant = MerchantFactory()
    payments = AccountFactory(merchant=merchant, account_type="DEBIT_NORMAL")
    bank = AccountFactory(merchant=merchant, account_type="CREDIT_NORMAL")
    ReconRuleFactory(merchant=merchant, account_one=payments, account_two=bank)

    first = _round(payments, "o1")
    time.sleep(0.003)
    second = _round(payments, "o2")

    for kind in first:
        for key in first[kind] + second[kind]:
            assert isinstance(key, uuid.UUID) and key.version == 7, (kind, key)
        # Created later (at least 2 ms apart) sorts after: as UUIDs and as PostgreSQL orders them.
        assert max(first[kind]) < min(second[kind]), kind
        assert str(max(first[kind])) < str(min(second[kind])), kind
    all_tasks = first["task"] + second["task"]
    assert (
        list(ProcessTracker.objects.filter(pk__in=all_tasks).order_by("pk").values_list("pk", flat=True)) == all_tasks
    )


def test_bulk_producers_make_version_7_ids():
    """The bulk path (COPY on PostgreSQL) sets the task ids itself, and the CSV rows path lets the database
    make both ids: version 7 as well."""
    account = AccountFactory()
    rows = [
        {
            "entry_type": "DEBIT",
            "amount": Decimal("1.5"),
            "currency": "USD",
            "effective_date": DAY,
            "processing_mode": "TRANSACTION",
            "metadata": {"order_id": f"b{i}"},
        }
        for i in range(3)
    ]
    entries = recon_services.staging_entries_create_many(account=account, rows=rows)
    recon_services.staging_entries_create_rows(
        account=account, rows=[("DEBIT", "2.5", "USD", DAY, "TRANSACTION", {"order_id": "r1"})]
    )
    staged = list(StagingEntry.objects.filter(account=account).values_list("pk", "task_id"))
    assert len(staged) == 4 and {e.pk for e in entries} <= {pk for pk, _ in staged}
    for pk, task_id in staged:
        assert (pk.version, task_id.version) == (7, 7)
        assert ProcessTracker.objects.filter(pk=task_id).exists()


def test_task_ids_are_version_7():
    task = tracker_services.task_create(task_type="test.noop", payload={})
    assert task.task_id.version == 7
    assert ProcessTracker.objects.get(pk=task.task_id).task_id.version == 7
