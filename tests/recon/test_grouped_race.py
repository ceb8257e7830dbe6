"""Real processes: two consumers (tracker workers in processes of their own, started together), one taking a
payout (one_to_many) and the other a single confirmation for one member of the same group, race for that
expectation; exactly one of them wins it, and it is fulfilled once (the group is loaded and locked in one
statement, in id order). Two instalments racing for one expectation both pay."""

import pytest

from recon.models import Entry, StagingEntry, Transaction
from tests.conftest import wait_until
from tests.recon.factories import AccountFactory, MerchantFactory, ReconRuleFactory, stage
from tracker.models import ProcessTracker, Transition
from tracker.worker import Worker

GROUPS = 30
# A consumer process: ready, then waits for the go file, so both start draining together (not one after the other).
CONSUMER = """
import os, sys, time
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from tracker.worker import Worker
name, ready, go = sys.argv[1:4]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
Worker(name, batch_size=1).drain(budget_seconds=60)
"""


def race(processes, tmp_path):
    """Two consumer processes, started together, until they have drained everything."""
    for i in range(2):
        processes.start(["-c", CONSUMER, f"consumer-{i}", str(tmp_path / f"ready{i}"), str(tmp_path / "go")])
    wait_until(lambda: all((tmp_path / f"ready{i}").exists() for i in range(2)), timeout=60, message="ready")
    (tmp_path / "go").touch()
    wait_until(lambda: all(p.poll() is not None for p in processes.procs), timeout=120, message="consumers")
    assert not ProcessTracker.objects.exclude(status="COMPLETED").exists(), processes.output()
    workers = set(Transition.objects.filter(to_status="PROCESSING").values_list("by_worker", flat=True))
    assert {"consumer-0", "consumer-1"} <= workers, workers  # both took part


@pytest.mark.django_db(transaction=True)
def test_a_payout_and_a_single_confirmation_never_both_win_one_expectation(processes, tmp_path):
    merchant = MerchantFactory()
    payments, fees = AccountFactory(merchant=merchant), AccountFactory(merchant=merchant)
    bank = AccountFactory(merchant=merchant, account_type="CREDIT_NORMAL")
    ReconRuleFactory(
        merchant=merchant,
        account_one=payments,
        account_two=bank,
        match_mode="one_to_many",
        group_key="payout_id",
        difference_account=fees,
    )
    for g in range(GROUPS):
        for part in ("a", "b"):
            stage(payments, order_id=f"o{g}{part}", amount="50.00", metadata={"payout_id": f"P{g}"})
    Worker("setup").drain(budget_seconds=60)
    for g in range(GROUPS):  # the payout (key P{g} in order_id, the confirmation key) and a confirmation of o{g}a
        stage(bank, mode="CONFIRMATION", side="CREDIT", order_id=f"P{g}", amount="100.00")
        stage(bank, mode="CONFIRMATION", side="CREDIT", order_id=f"o{g}a", amount="50.00")
    race(processes, tmp_path)
    for g in range(GROUPS):
        payout = StagingEntry.objects.get(metadata__order_id=f"P{g}")
        single = StagingEntry.objects.get(metadata__order_id=f"o{g}a", processing_mode="CONFIRMATION")
        won = (payout.status == "PROCESSED", single.status == "PROCESSED")
        assert won in ((True, False), (False, True)), (g, payout.metadata, single.metadata)
        loser = single if won[0] else payout
        assert loser.metadata["error_type"] == ("NoMatchFoundError" if won[0] else "MismatchError")
        a = Transaction.objects.filter(logical_transaction_id=f"{payments.pk}:o{g}a")
        assert sorted(a.values_list("version", "status")) == [(1, "ARCHIVED"), (2, "POSTED")]
    for txn in Transaction.objects.exclude(status="ARCHIVED"):
        legs = Entry.objects.filter(transaction=txn).exclude(status="ARCHIVED")
        assert sum(e.amount if e.entry_type == "DEBIT" else -e.amount for e in legs) == 0


@pytest.mark.django_db(transaction=True)
def test_two_instalments_racing_for_one_expectation_both_pay(processes, tmp_path):
    """The instalment that waited for the other's lock pays against the new open version (the remainder)."""
    merchant = MerchantFactory()
    invoices = AccountFactory(merchant=merchant)
    bank = AccountFactory(merchant=merchant, account_type="CREDIT_NORMAL")
    ReconRuleFactory(merchant=merchant, account_one=invoices, account_two=bank, match_mode="many_to_one")
    for g in range(GROUPS):
        stage(invoices, order_id=f"inv{g}", amount="100.00")
    Worker("setup").drain(budget_seconds=60)
    for g in range(GROUPS):
        for _ in range(2):
            stage(bank, mode="CONFIRMATION", side="CREDIT", order_id=f"inv{g}", amount="30.00")
    race(processes, tmp_path)
    assert not StagingEntry.objects.exclude(status="PROCESSED").exists()
    for g in range(GROUPS):
        versions = Transaction.objects.filter(logical_transaction_id=f"{invoices.pk}:inv{g}")
        assert sorted(versions.values_list("version", "status")) == [(1, "ARCHIVED"), (2, "ARCHIVED"), (3, "EXPECTED")]
        assert versions.get(version=3).metadata["remaining"] == "40.0000"
