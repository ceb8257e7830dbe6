import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from recon import balances, services
from recon.errors import IllegalStateError, PeriodClosedConflict
from recon.models import Entry, StagingEntry, Transaction
from tests.recon.factories import DAY, AccountFactory, ReconRuleFactory, stage
from tracker import audit
from tracker.models import ProcessTracker
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


def drain():
    return Worker("test-worker").drain(budget_seconds=20)


def fresh(obj):
    obj.refresh_from_db()
    return obj


def test_transaction_mode_creates_expected_version_one(ledger):
    entry = stage(ledger.payments, amount="100.50")
    totals = drain()
    assert (totals.processed, totals.succeeded, totals.failed) == (1, 1, 0)
    entry = fresh(entry)
    assert entry.status == "PROCESSED" and entry.metadata == {"order_id": "o1", "match_type": "NewTransactionGenerated"}
    assert entry.discarded_at is not None
    txn = Transaction.objects.get()
    assert (txn.version, txn.status, txn.amount) == (1, "EXPECTED", Decimal("100.50"))
    assert txn.logical_transaction_id == f"{ledger.payments.pk}:o1"
    legs = {(e.account_id, e.entry_type, e.status) for e in txn.entries.all()}
    assert legs == {(ledger.payments.pk, "DEBIT", "POSTED"), (ledger.bank.pk, "CREDIT", "EXPECTED")}
    assert all(e.metadata["source_staging_entry_id"] == str(entry.pk) for e in txn.entries.all())
    assert ProcessTracker.objects.get(pk=entry.task_id).status == "COMPLETED"
    assert [(t.from_status, t.to_status, t.by) for t in audit.history(entry)] == [
        ("PENDING", "PROCESSED", "test-worker")
    ]


def test_confirmation_fulfils_expectation(ledger):
    stage(ledger.payments, amount="100.00")
    drain()
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="100.00")
    drain()
    confirmation = fresh(confirmation)
    assert confirmation.status == "PROCESSED" and confirmation.metadata["match_type"] == "Fulfilled"
    v1, v2 = Transaction.objects.order_by("version")
    assert (v1.status, v2.status, v2.version) == ("ARCHIVED", "POSTED", 2)
    assert v2.source_staging_entry_id == confirmation.pk
    assert set(v1.entries.values_list("status", flat=True)) == {"ARCHIVED"}
    assert sorted(v2.entries.values_list("account_id", "entry_type", "status")) == sorted(
        [(ledger.payments.pk, "DEBIT", "POSTED"), (ledger.bank.pk, "CREDIT", "POSTED")]
    )
    assert balances.balances_of(ledger.bank) == {
        "posted_balance": Decimal("100"),
        "pending_balance": Decimal("100"),
        "available_balance": Decimal("100"),
    }


def test_balances_count_expected_as_pending_with_initial_balance(ledger):
    ledger.bank.initial_balance = Decimal("10.00")
    ledger.bank.save()
    stage(ledger.payments, amount="40.00")
    drain()
    assert balances.balances_of(ledger.bank) == {
        "posted_balance": Decimal("10"),
        "pending_balance": Decimal("50"),
        "available_balance": Decimal("10"),
    }
    assert balances.balances_of(ledger.payments) == {
        "posted_balance": Decimal("40"),
        "pending_balance": Decimal("40"),
        "available_balance": Decimal("40"),
    }


def test_missing_rule_goes_to_review_and_task_completes(merchant):
    lonely = AccountFactory(merchant=merchant)
    entry = stage(lonely)
    totals = drain()
    entry = fresh(entry)
    assert totals.succeeded == 1
    assert entry.status == "NEEDS_MANUAL_REVIEW" and entry.metadata["error_type"] == "NoReconRuleFoundError"
    assert ProcessTracker.objects.get(pk=entry.task_id).status == "COMPLETED"
    assert not Transaction.objects.exists()


def test_currency_mismatch_checked_first(ledger):
    entry = stage(ledger.payments, currency="EUR")
    drain()
    entry = fresh(entry)
    assert entry.metadata["error_type"] == "CurrencyMismatchError" and not Transaction.objects.exists()


def test_duplicate_transaction(ledger):
    stage(ledger.payments)
    second = stage(ledger.payments)
    drain()
    assert fresh(second).metadata["error_type"] == "DuplicateTransactionError"
    assert Transaction.objects.count() == 1


def test_entry_without_key_gets_generated_logical_id(ledger):
    entry = stage(ledger.payments, order_id=None)
    drain()
    assert Transaction.objects.get().logical_transaction_id == f"{ledger.payments.pk}:{entry.pk}"


def test_no_match_then_expectation_rematches_automatically(ledger):
    bank_line = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="late")
    drain()
    bank_line = fresh(bank_line)
    assert bank_line.metadata["error_type"] == "NoMatchFoundError"
    old_task = bank_line.task_id
    stage(ledger.payments, order_id="late")
    drain()
    bank_line = fresh(bank_line)
    assert bank_line.status == "PROCESSED" and bank_line.metadata["match_type"] == "Fulfilled"
    assert bank_line.task_id != old_task
    assert [t.to_status for t in audit.history(bank_line)] == ["NEEDS_MANUAL_REVIEW", "PENDING", "PROCESSED"]


def test_ambiguous_match_over_rules_sharing_account_two(ledger):
    other = AccountFactory(merchant=ledger.merchant)
    ReconRuleFactory(merchant=ledger.merchant, account_one=other, account_two=ledger.bank)
    stage(ledger.payments, order_id="x")
    stage(other, order_id="x")
    drain()
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="x")
    drain()
    assert fresh(confirmation).metadata["error_type"] == "AmbiguousMatchError"
    assert not Transaction.objects.filter(status="POSTED").exists()


def test_mismatch_marks_transaction_and_ignore_reopens_it(ledger, staff_user):
    stage(ledger.payments, amount="100.00")
    drain()
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="DEBIT", amount="90.00")
    drain()
    confirmation = fresh(confirmation)
    assert confirmation.status == "NEEDS_MANUAL_REVIEW" and confirmation.metadata["error_type"] == "MismatchError"
    assert "side differs" in confirmation.metadata["error"] and "amount differs" in confirmation.metadata["error"]
    txn = Transaction.objects.get()
    assert txn.status == "MISMATCH"
    services.staging_entry_resolve(
        staging_entry_id=confirmation.pk, action="ignore", reason="bank error", by=staff_user
    )
    assert fresh(confirmation).status == "ARCHIVED"
    assert fresh(txn).status == "EXPECTED"
    assert [(t.from_status, t.to_status, t.by) for t in audit.history(txn)][-1] == ("MISMATCH", "EXPECTED", "staff")
    with pytest.raises(IllegalStateError):
        services.staging_entry_resolve(staging_entry_id=confirmation.pk, action="reprocess", by=staff_user)


def test_reprocess_after_mismatch_reopens_and_requeues(ledger, staff_user):
    stage(ledger.payments, amount="100.00")
    drain()
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="90.00")
    drain()
    services.staging_entry_resolve(staging_entry_id=confirmation.pk, action="reprocess", by=staff_user)
    confirmation = fresh(confirmation)
    assert confirmation.status == "PENDING" and "error" not in confirmation.metadata
    assert Transaction.objects.get().status == "EXPECTED"
    drain()
    assert fresh(confirmation).metadata["error_type"] == "MismatchError"


def test_tolerance_match_books_difference_leg(ledger):
    diff = AccountFactory(merchant=ledger.merchant, account_name="fx diff")
    ledger.rule.amount_tolerance = Decimal("1.00")
    ledger.rule.difference_account = diff
    ledger.rule.save()
    stage(ledger.payments, amount="100.00")
    drain()
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="99.25")
    drain()
    assert fresh(confirmation).status == "PROCESSED"
    v2 = Transaction.objects.get(status="POSTED")
    assert v2.metadata["amount_difference"] == "-0.7500"
    legs = sorted((e.account_id == diff.pk, e.entry_type, e.amount) for e in v2.entries.all())
    assert (True, "CREDIT", Decimal("0.7500")) in legs
    debit = sum(e.amount for e in v2.entries.all() if e.entry_type == "DEBIT")
    credit = sum(e.amount for e in v2.entries.all() if e.entry_type == "CREDIT")
    assert debit == credit == Decimal("100")


def test_percent_tolerance_and_outside_it(ledger):
    diff = AccountFactory(merchant=ledger.merchant)
    ledger.rule.amount_tolerance_pct = Decimal("1")
    ledger.rule.difference_account = diff
    ledger.rule.save()
    stage(ledger.payments, amount="200.00", order_id="a")
    stage(ledger.payments, amount="200.00", order_id="b")
    drain()
    inside = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="202.00", order_id="a")
    outside = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="202.01", order_id="b")
    drain()
    assert fresh(inside).status == "PROCESSED"
    assert fresh(outside).metadata["error_type"] == "MismatchError"


def test_date_window(ledger):
    ledger.rule.date_window_days = 2
    ledger.rule.save()
    stage(ledger.payments, order_id="a")
    stage(ledger.payments, order_id="b")
    drain()
    ok = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="a", when=DAY + dt.timedelta(days=2))
    late = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="b", when=DAY + dt.timedelta(days=3))
    drain()
    assert fresh(ok).status == "PROCESSED"
    assert "date outside" in fresh(late).metadata["error"]


def test_custom_match_key(ledger):
    ledger.rule.match_key = "ref"
    ledger.rule.save()
    stage(ledger.payments, order_id=None, metadata={"ref": "R1"})
    drain()
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id=None, metadata={"ref": "R1"})
    drain()
    assert fresh(confirmation).metadata["match_type"] == "Fulfilled"


def test_forced_match_resolves_mismatch(ledger, staff_user):
    diff = AccountFactory(merchant=ledger.merchant)
    ledger.rule.amount_tolerance = Decimal("5")
    ledger.rule.difference_account = diff
    ledger.rule.date_window_days = 0
    ledger.rule.save()
    stage(ledger.payments, amount="100.00")
    drain()
    confirmation = stage(
        ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="97.00", when=DAY + dt.timedelta(days=5)
    )
    drain()
    assert Transaction.objects.get().status == "MISMATCH"
    expected = Entry.objects.get(status="EXPECTED")
    services.staging_entry_resolve(
        staging_entry_id=confirmation.pk, action="match", entry_id=expected.pk, by=staff_user
    )
    confirmation = fresh(confirmation)
    assert confirmation.status == "PROCESSED"
    assert sorted(Transaction.objects.values_list("version", "status")) == [(1, "ARCHIVED"), (2, "POSTED")]
    assert audit.history(confirmation)[-1].by == "staff"


def test_closed_period_sends_to_review_and_blocks_resolve(ledger, staff_user):
    period = services.period_close(
        merchant=ledger.merchant, start_date=dt.date(2026, 10, 1), end_date=dt.date(2026, 11, 30), by=staff_user
    )
    entry = stage(ledger.payments)
    drain()
    entry = fresh(entry)
    assert entry.metadata["error_type"] == "PeriodClosedError" and not Transaction.objects.exists()
    with pytest.raises(PeriodClosedConflict) as exc:
        services.staging_entry_resolve(staging_entry_id=entry.pk, action="reprocess", by=staff_user)
    assert exc.value.status == 409 and exc.value.code == "period_closed"
    services.period_reopen(period=period, by=staff_user)
    services.staging_entry_resolve(staging_entry_id=entry.pk, action="reprocess", by=staff_user)
    drain()
    assert fresh(entry).status == "PROCESSED"
    with pytest.raises(IllegalStateError):
        services.period_reopen(period=period, by=staff_user)


def test_pending_entry_with_failed_task_can_be_ignored_or_reprocessed(ledger, staff_user):
    entry = stage(ledger.payments)
    services_task = ProcessTracker.objects.get(pk=entry.task_id)
    with pytest.raises(IllegalStateError):
        services.staging_entry_resolve(staging_entry_id=entry.pk, action="reprocess", by=staff_user)
    from tracker.services import task_cancel

    task_cancel(task_id=services_task.pk)
    services.staging_entry_resolve(staging_entry_id=entry.pk, action="reprocess", by=staff_user)
    entry = fresh(entry)
    assert entry.status == "PENDING" and entry.task_id != services_task.pk
    task_cancel(task_id=entry.task_id)
    services.staging_entry_resolve(staging_entry_id=entry.pk, action="ignore", reason="test", by=staff_user)
    assert fresh(entry).status == "ARCHIVED"


def test_idempotency_key(ledger):
    a = stage(ledger.payments, idempotency_key="k1")
    b = stage(ledger.payments, idempotency_key="k1")
    assert a.pk == b.pk and StagingEntry.objects.count() == 1 and ProcessTracker.objects.count() == 1
    from recon.errors import IdempotencyConflictError

    with pytest.raises(IdempotencyConflictError):
        stage(ledger.payments, idempotency_key="k1", amount="5")


def test_database_rejects_non_positive_amounts_and_duplicate_versions(ledger):
    stage(ledger.payments)
    drain()
    txn = Transaction.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        Entry.objects.filter(transaction=txn).update(amount=0)
    with pytest.raises(IntegrityError), transaction.atomic():
        Transaction.objects.create(
            logical_transaction_id=txn.logical_transaction_id,
            version=1,
            status="ARCHIVED",
            amount=1,
            currency="USD",
            merchant=ledger.merchant,
        )
