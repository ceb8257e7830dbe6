"""Hypothesis: any sequence of TRANSACTION and CONFIRMATION entries leaves every transaction balanced, every
staging entry in exactly one terminal state, and at most one transaction version created per staging entry."""

import datetime as dt
from collections import defaultdict
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings, strategies as st

from recon import services
from recon.models import Entry, StagingEntry, Transaction
from tests.recon.factories import AccountFactory, MerchantFactory, ReconRuleFactory
from tracker.models import ProcessTracker
from tracker.worker import Worker

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=2)
step = st.one_of(
    st.tuples(st.just("entry"), st.sampled_from(["TRANSACTION", "CONFIRMATION"]),
              st.sampled_from(["payments", "bank", "orphan"]), st.sampled_from(["DEBIT", "CREDIT"]), amounts,
              st.sampled_from(["o1", "o2", "o3", None]), st.sampled_from(["USD", "USD", "USD", "EUR"]),
              st.integers(min_value=0, max_value=6)),
    st.tuples(st.just("drain")),
)


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=14), tolerance=st.sampled_from(["0", "1.00"]),
       window=st.sampled_from([None, 2]))
def test_any_sequence_keeps_ledger_invariants(steps, tolerance, window):
    with transaction.atomic():
        merchant = MerchantFactory()
        accounts = {"payments": AccountFactory(merchant=merchant), "orphan": AccountFactory(merchant=merchant),
                    "bank": AccountFactory(merchant=merchant, account_type="CREDIT_NORMAL")}
        diff = AccountFactory(merchant=merchant)
        ReconRuleFactory(merchant=merchant, account_one=accounts["payments"], account_two=accounts["bank"],
                         amount_tolerance=Decimal(tolerance), difference_account=diff, date_window_days=window)
        worker = Worker("prop")
        for s in steps:
            if s[0] == "drain":
                worker.drain(budget_seconds=30)
                continue
            _, mode, account, side, amount, order_id, currency, day = s
            services.staging_entry_create(
                account=accounts[account], entry_type=side, amount=amount, currency=currency,
                effective_date=dt.datetime(2026, 11, 1 + day, tzinfo=dt.UTC), processing_mode=mode,
                metadata={"order_id": order_id} if order_id else {})
        worker.drain(budget_seconds=30)

        staged = list(StagingEntry.objects.filter(account__merchant=merchant))
        for entry in staged:
            assert entry.status in ("PROCESSED", "NEEDS_MANUAL_REVIEW", "ARCHIVED"), entry
            assert ProcessTracker.objects.get(pk=entry.task_id).status == "COMPLETED"
            assert Transaction.objects.filter(source_staging_entry=entry).count() <= 1
            assert ("match_type" in entry.metadata) == (entry.status == "PROCESSED")
            assert ("error_type" in entry.metadata) == (entry.status == "NEEDS_MANUAL_REVIEW")
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
        transaction.set_rollback(True)
