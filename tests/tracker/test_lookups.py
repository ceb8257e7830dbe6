"""`field__any=[...]`: the same rows as `__in`, sent to PostgreSQL as one array parameter."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from recon.models import Entry, Transaction
from tests.recon.factories import AccountFactory, MerchantFactory, ReconRuleFactory, stage
from tracker.models import ProcessTracker
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger():
    merchant = MerchantFactory()
    payments = AccountFactory(merchant=merchant, account_type="DEBIT_NORMAL")
    bank = AccountFactory(merchant=merchant, account_type="CREDIT_NORMAL")
    ReconRuleFactory(merchant=merchant, account_one=payments, account_two=bank)
    for i in range(4):
        stage(payments, order_id=f"o{i}")
    Worker("lookup-worker").drain(budget_seconds=20)
    return payments


def test_any_selects_what_in_selects(ledger):
    txns = list(Transaction.objects.order_by("pk").values_list("pk", flat=True))
    assert len(txns) == 4
    some = txns[:2]
    for field, values in [
        ("pk", some),
        ("pk", [str(t) for t in some]),
        ("transaction_id", some),
        ("account_id", [ledger.pk]),
    ]:
        assert sorted(Entry.objects.filter(**{f"{field}__any": values}).values_list("pk", flat=True)) == sorted(
            Entry.objects.filter(**{f"{field}__in": values}).values_list("pk", flat=True)
        ), field
    logicals = list(Transaction.objects.values_list("logical_transaction_id", flat=True))[:3]
    assert Transaction.objects.filter(logical_transaction_id__any=logicals + ["it's:none"]).count() == 3
    assert ProcessTracker.objects.filter(task_id__any=[]).count() == 0
    assert Entry.objects.filter(pk__any=some).update(metadata={"touched": True}) == 0  # no entry has a txn's id


def test_any_is_one_array_parameter_on_postgresql(ledger):
    ids = list(Entry.objects.values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as queries:
        assert Entry.objects.filter(pk__any=ids).count() == len(ids) == 8
    sql = queries.captured_queries[0]["sql"]
    assert "= ANY(" in sql and " IN (" not in sql and sql.count("::uuid[]") >= 1
