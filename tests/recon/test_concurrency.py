"""Two consumers processing confirmations of the same order id never fulfil one expectation twice, one task at
a time (the per-entry path) or in batches (the set-based CONFIRMATION path)."""

import threading

import pytest
from django.db import connection

from recon.models import StagingEntry, Transaction
from tests.recon.factories import AccountFactory, MerchantFactory, ReconRuleFactory, stage
from tracker.worker import Worker


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("batch_size", [1, 3])  # 3: the pairs of one order id straddle two batches
def test_two_consumers_never_fulfil_one_expectation_twice(batch_size):
    merchant = MerchantFactory()
    payments = AccountFactory(merchant=merchant)
    bank = AccountFactory(merchant=merchant, account_type="CREDIT_NORMAL")
    ReconRuleFactory(merchant=merchant, account_one=payments, account_two=bank)
    orders = [f"o{i}" for i in range(8)]
    for order in orders:
        stage(payments, order_id=order, amount="25.00")
    Worker("setup").drain(budget_seconds=30)
    for order in orders:
        for _ in range(2):
            stage(bank, mode="CONFIRMATION", side="CREDIT", order_id=order, amount="25.00")

    barrier = threading.Barrier(2)
    errors = []

    def consume(name):
        try:
            barrier.wait(timeout=10)
            Worker(name, batch_size=batch_size).drain(budget_seconds=60)
        except Exception as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=consume, args=(f"consumer-{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors

    for order in orders:
        confirmations = StagingEntry.objects.filter(account=bank, metadata__order_id=order)
        outcomes = sorted(c.metadata.get("match_type") or c.metadata.get("error_type") for c in confirmations)
        assert outcomes == ["Fulfilled", "NoMatchFoundError"], (order, outcomes)
        versions = Transaction.objects.filter(logical_transaction_id=f"{payments.pk}:{order}")
        assert sorted(versions.values_list("version", "status")) == [(1, "ARCHIVED"), (2, "POSTED")]
    # both consumers really took part
    from tracker.models import Transition

    workers = set(Transition.objects.filter(to_status="PROCESSING").values_list("by_worker", flat=True))
    assert {"consumer-0", "consumer-1"} <= workers
