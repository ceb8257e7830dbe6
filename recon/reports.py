"""Summary figures for the API, the admin page and `recon_summary`."""

import datetime as dt
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from recon.models import MONEY_QUANTUM, Entry, EntryStatus, StagingEntry, StagingStatus, Transaction, TransactionStatus
from recon.selectors import staging_entries_in_review, staging_entries_stuck

# Ageing buckets of API.md (days since the row was created): name, from (inclusive), to (exclusive).
AGE_BUCKETS = (("<1d", 0, 1), ("1-3d", 1, 3), ("3-7d", 3, 7), ("7-30d", 7, 30), (">30d", 30, None))
MATCH_RATE_DAYS = 30  # days of the per-day match rate in the summary


def ageing(queryset: QuerySet, now: dt.datetime, field: str = "created_at") -> dict[str, int]:
    """Rows of `queryset` per age bucket, in one query."""
    counts = {}
    for name, lo, hi in AGE_BUCKETS:
        q = Q(**{f"{field}__lte": now - dt.timedelta(days=lo)})
        if hi is not None:
            q &= Q(**{f"{field}__gt": now - dt.timedelta(days=hi)})
        counts[name] = Count("pk", filter=q)
    return queryset.order_by().aggregate(**counts)


def _rate(matched: int, decided: int) -> float | None:
    return round(matched / decided, 4) if decided else None


def _decided(staging: QuerySet[StagingEntry]) -> QuerySet[StagingEntry]:
    return staging.filter(status__in=(StagingStatus.PROCESSED, StagingStatus.NEEDS_MANUAL_REVIEW)).order_by()


DECIDED_FIGURES = dict(matched=Count("pk", filter=Q(status=StagingStatus.PROCESSED)), decided=Count("pk"))


def match_rates_by_day(staging: QuerySet[StagingEntry], *, since: dt.datetime) -> list[dict]:
    """Per day of arrival (`created_at`, UTC) from `since` on: decided staging entries (PROCESSED or in review),
    how many matched and the share that did (None when none was decided); one grouped query."""
    rows = (
        _decided(staging)
        .filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day")
        .annotate(**DECIDED_FIGURES)
        .order_by("day")
    )
    return [
        {
            "date": r["day"].isoformat(),
            "matched": r["matched"],
            "decided": r["decided"],
            "match_rate": _rate(r["matched"], r["decided"]),
        }
        for r in rows
    ]


def match_rates(staging: QuerySet[StagingEntry], now: dt.datetime) -> dict:
    """The share of decided staging entries (PROCESSED or in review) that matched, per day of arrival
    (`created_at`, UTC) over the last MATCH_RATE_DAYS days and per account: two grouped queries."""
    decided = _decided(staging)
    figures = DECIDED_FIGURES
    by_account = (
        decided.values("account_id", "account__account_name")
        .annotate(**figures)
        .order_by("account__account_name", "account_id")
    )
    return {
        "by_day": match_rates_by_day(staging, since=now - dt.timedelta(days=MATCH_RATE_DAYS)),
        "by_account": [
            {
                "account_id": str(r["account_id"]),
                "account_name": r["account__account_name"],
                "matched": r["matched"],
                "decided": r["decided"],
                "match_rate": _rate(r["matched"], r["decided"]),
            }
            for r in by_account
        ],
    }


def summary(merchant_id: str | None = None, *, merchant_ids: set[str] | None = None) -> dict:
    """Counts by staging and transaction status, amounts per currency, match rate (overall, per day, per
    account), entries whose task FAILED or was CANCELLED, and age buckets of open EXPECTED entries and of the
    review queue. `merchant_id` narrows to one merchant; `merchant_ids` (access control) to a set."""
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
    for currency, status, total, n in (
        staging.order_by().values_list("currency", "status").annotate(total=Sum("amount"), n=Count("pk"))
    ):
        total = Decimal(total).quantize(MONEY_QUANTUM)
        cur = amounts.setdefault(currency, {"total": Decimal("0"), "count": 0, "by_status": {}})
        cur["total"] += total
        cur["count"] += n
        cur["by_status"][status] = {"total": total, "count": n}
    matched = by_staging[StagingStatus.PROCESSED]
    decided = matched + by_staging[StagingStatus.NEEDS_MANUAL_REVIEW]
    stuck = staging_entries_stuck(staging).count()
    now = timezone.now()
    open_expected = entries.filter(
        status=EntryStatus.EXPECTED, transaction__status__in=(TransactionStatus.EXPECTED, TransactionStatus.MISMATCH)
    )
    return {
        "merchant_id": merchant_id,
        "staging_entries": {"by_status": by_staging, "total": sum(by_staging.values())},
        "transactions": {"by_status": by_txn, "total": sum(by_txn.values())},
        "amounts_by_currency": amounts,
        "match_rate": _rate(matched, decided),
        "match_rates": match_rates(staging, now),
        "failed_or_cancelled_tasks": stuck,
        "open_expected_ageing": ageing(open_expected, now),
        "review_queue_ageing": ageing(staging_entries_in_review(staging), now),
        "generated_at": now,
    }


def period_summary(*, merchant_id: str, start_date: dt.date, end_date: dt.date) -> dict:
    """Figures of one merchant's period (UTC dates of `effective_date`, both ends included), for closing it:
    staging entries by status, the review queue, ledger entries by status and amounts per currency
    (JSON-ready: amounts as strings)."""
    from recon.serializers import money_str

    start = dt.datetime.combine(start_date, dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(end_date + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    staging = StagingEntry.objects.filter(
        account__merchant_id=merchant_id, effective_date__gte=start, effective_date__lt=end
    )
    entries = Entry.objects.filter(account__merchant_id=merchant_id, effective_date__gte=start, effective_date__lt=end)
    by_staging = {s: 0 for s in StagingStatus.values}
    by_staging.update(dict(staging.order_by().values_list("status").annotate(n=Count("pk"))))
    by_entry = {s: 0 for s in EntryStatus.values}
    by_entry.update(dict(entries.order_by().values_list("status").annotate(n=Count("pk"))))
    amounts: dict[str, dict] = {}
    for currency, status, total, n in (
        entries.exclude(status=EntryStatus.ARCHIVED)
        .order_by()
        .values_list("currency", "status")
        .annotate(total=Sum("amount"), n=Count("pk"))
    ):
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
