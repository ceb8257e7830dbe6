"""Summary figures for the API, the admin page and `recon_summary`."""

import datetime as dt
from decimal import Decimal

from django.db.models import Count, Sum
from django.utils import timezone

from recon.models import (MONEY_QUANTUM, Entry, EntryStatus, StagingEntry, StagingStatus, Transaction,
                          TransactionStatus)
from recon.selectors import staging_entries_stuck

AGE_BUCKETS = (("0-1d", 0, 1), ("1-7d", 1, 7), ("7-30d", 7, 30), (">30d", 30, None))


def summary(merchant_id: str | None = None, *, merchant_ids: set[str] | None = None) -> dict:
    """Counts by staging and transaction status, amounts per currency, match rate, entries whose task FAILED
    or was CANCELLED, and age buckets of open EXPECTED entries. `merchant_id` narrows to one merchant;
    `merchant_ids` (access control) to a set."""
    staging = StagingEntry.objects.all()
    txns = Transaction.objects.all()
    entries = Entry.objects.all()
    if merchant_id is not None:
        staging = staging.filter(account__merchant_id=merchant_id)
        txns = txns.filter(merchant_id=merchant_id)
        entries = entries.filter(account__merchant_id=merchant_id)
    if merchant_ids is not None:
        staging = staging.filter(account__merchant_id__in=merchant_ids)
        txns = txns.filter(merchant_id__in=merchant_ids)
        entries = entries.filter(account__merchant_id__in=merchant_ids)
    by_staging = {s: 0 for s in StagingStatus.values}
    by_staging.update(dict(staging.order_by().values_list("status").annotate(n=Count("pk"))))
    by_txn = {s: 0 for s in TransactionStatus.values}
    by_txn.update(dict(txns.order_by().values_list("status").annotate(n=Count("pk"))))
    amounts: dict[str, dict] = {}
    for currency, status, total, n in (staging.order_by().values_list("currency", "status")
                                       .annotate(total=Sum("amount"), n=Count("pk"))):
        total = Decimal(total).quantize(MONEY_QUANTUM)
        cur = amounts.setdefault(currency, {"total": Decimal("0"), "count": 0, "by_status": {}})
        cur["total"] += total
        cur["count"] += n
        cur["by_status"][status] = {"total": total, "count": n}
    matched = by_staging[StagingStatus.PROCESSED]
    decided = matched + by_staging[StagingStatus.NEEDS_MANUAL_REVIEW]
    stuck = staging_entries_stuck(staging).count()
    now = timezone.now()
    open_expected = entries.filter(status=EntryStatus.EXPECTED,
                                   transaction__status__in=(TransactionStatus.EXPECTED, TransactionStatus.MISMATCH))
    ageing = {}
    for name, lo, hi in AGE_BUCKETS:
        qs = open_expected.filter(created_at__lte=now - dt.timedelta(days=lo))
        if hi is not None:
            qs = qs.filter(created_at__gt=now - dt.timedelta(days=hi))
        ageing[name] = qs.count()
    return {
        "merchant_id": merchant_id,
        "staging_entries": {"by_status": by_staging, "total": sum(by_staging.values())},
        "transactions": {"by_status": by_txn, "total": sum(by_txn.values())},
        "amounts_by_currency": amounts,
        "match_rate": round(matched / decided, 4) if decided else None,
        "failed_or_cancelled_tasks": stuck,
        "open_expected_ageing": ageing,
        "generated_at": now,
    }


def period_summary(*, merchant_id: str, start_date: dt.date, end_date: dt.date) -> dict:
    """Figures of one merchant's period (UTC dates of `effective_date`, both ends included), for closing it:
    staging entries by status, the review queue, ledger entries by status and amounts per currency
    (JSON-ready: amounts as strings)."""
    from recon.serializers import money_str

    start = dt.datetime.combine(start_date, dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(end_date + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    staging = StagingEntry.objects.filter(account__merchant_id=merchant_id, effective_date__gte=start,
                                          effective_date__lt=end)
    entries = Entry.objects.filter(account__merchant_id=merchant_id, effective_date__gte=start,
                                   effective_date__lt=end)
    by_staging = {s: 0 for s in StagingStatus.values}
    by_staging.update(dict(staging.order_by().values_list("status").annotate(n=Count("pk"))))
    by_entry = {s: 0 for s in EntryStatus.values}
    by_entry.update(dict(entries.order_by().values_list("status").annotate(n=Count("pk"))))
    amounts: dict[str, dict] = {}
    for currency, status, total, n in (entries.exclude(status=EntryStatus.ARCHIVED).order_by()
                                       .values_list("currency", "status").annotate(total=Sum("amount"), n=Count("pk"))):
        amounts.setdefault(currency, {})[status] = {"total": money_str(total), "count": n}
    stuck = staging_entries_stuck(staging).count()
    return {
        "merchant_id": merchant_id,
        "start_date": start_date.isoformat(),
        "end_date": end_date.isoformat(),
        "staging_entries": {"by_status": by_staging, "total": sum(by_staging.values())},
        "open_review": by_staging[StagingStatus.NEEDS_MANUAL_REVIEW] + stuck,
        "entries": {"by_status": by_entry, "total": sum(by_entry.values())},
        "amounts_by_currency": amounts,
        "generated_at": timezone.now().isoformat(),
    }
