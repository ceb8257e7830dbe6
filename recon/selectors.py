"""Reads that more than one door uses (admin, API, reports, metrics): the one definition of each.

The review queue: staging entries NEEDS_MANUAL_REVIEW, and PENDING entries whose task FAILED or was CANCELLED (they
will not be processed without an operator, so they are never left unseen)."""

from django.db.models import Q, QuerySet

from recon.models import StagingEntry, StagingStatus
from tracker.models import ProcessTracker, TaskStatus

# Task states that leave a PENDING staging entry to an operator.
STUCK_TASK_STATUSES = (TaskStatus.FAILED, TaskStatus.CANCELLED)


def stuck_q() -> Q:
    """PENDING entries whose task FAILED or was CANCELLED (served by the partial index on PENDING task ids)."""
    return Q(
        status=StagingStatus.PENDING,
        task_id__in=ProcessTracker.objects.filter(status__in=STUCK_TASK_STATUSES).values("task_id"),
    )


def review_queue_q() -> Q:
    """The review queue as a filter on staging entries."""
    return Q(status=StagingStatus.NEEDS_MANUAL_REVIEW) | stuck_q()


def staging_entries_in_review(queryset: QuerySet[StagingEntry] | None = None) -> QuerySet[StagingEntry]:
    """The review queue (of `queryset`, default every staging entry)."""
    return (StagingEntry.objects.all() if queryset is None else queryset).filter(review_queue_q())


def staging_entries_stuck(queryset: QuerySet[StagingEntry] | None = None) -> QuerySet[StagingEntry]:
    """The PENDING part of the review queue (of `queryset`)."""
    return (StagingEntry.objects.all() if queryset is None else queryset).filter(stuck_q())


def task_is_stuck(task_status: str | None) -> bool:
    return task_status in STUCK_TASK_STATUSES


def staging_entry_in_review_queue(entry: StagingEntry) -> bool:
    """Whether one entry is in the review queue (one query at most)."""
    if entry.status == StagingStatus.NEEDS_MANUAL_REVIEW:
        return True
    if entry.status != StagingStatus.PENDING or entry.task_id is None:
        return False
    return ProcessTracker.objects.filter(pk=entry.task_id, status__in=STUCK_TASK_STATUSES).exists()
