"""The matching engine: one set-based path for any number of staging entries (`recon.matching`).

`staging_entries_process` locks a batch (`load`), decides every outcome without touching the database
(`decide`) and writes them with one writer (`write`). A worker's batch, a single task and an operator's forced
match are all batches here. Entries of a batch are processed by mode: TRANSACTION entries first (they create the
expectations), then CONFIRMATION entries, each in batch order.

Everything here runs inside a `transaction.atomic()` opened by the caller (the tracker worker or a service)."""

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from django.db import DataError, transaction
from django.utils import timezone

from recon import errors
from recon.matching.decide import Batch, Plan, allowed_difference, client_metadata, decide, review
from recon.matching.load import FORCED, WorkItem, batch_load, batch_plan, entries_lock, period_is_closed
from recon.matching.write import TASK_TYPE, plan_write, staging_entries_reprocess, task_spec
from recon.models import ProcessingMode, StagingEntry, StagingStatus

MODE_ORDER = (ProcessingMode.TRANSACTION, ProcessingMode.CONFIRMATION)

__all__ = [
    "TASK_TYPE",
    "WorkItem",
    "allowed_difference",
    "client_metadata",
    "period_is_closed",
    "staging_entries_process",
    "staging_entries_reprocess",
    "staging_entry_force_group",
    "staging_entry_force_match",
    "task_spec",
]


def staging_entries_process(*, items: Sequence[WorkItem], by: str) -> dict:
    """Processes the items' staging entries (those still PENDING and owned by their task; the others are left
    alone) and returns counts {"processed", "review"}. Raises MissingEntryError when an entry does not exist.

    Outcome errors end on the entry (NEEDS_MANUAL_REVIEW); other exceptions propagate (the tracker retries). A
    value the database rejects (too long for its column, out of range) can never succeed on retry: for a batch of
    one it ends the entry in review with InvalidValueError; a larger batch raises, and the worker then runs its
    tasks as batches of one."""
    with batch_plan():
        pairs = entries_lock(items)
        counts = {"processed": 0, "review": 0}
        for mode in MODE_ORDER:
            group = [(item, entry) for item, entry in pairs if entry.processing_mode == mode]
            while group:
                plan = _pass(batch_load(mode=mode, pairs=group), by=by, guard=len(pairs) == 1)
                for key, value in plan.counts().items():
                    counts[key] += value
                # Instalments for an expectation an earlier entry has just paid part of: another pass, in batch order.
                deferred = {e.pk for e in plan.deferred}
                group = [(item, entry) for item, entry in group if entry.pk in deferred]
    return counts


def _pass(batch: Batch, *, by: str, guard: bool) -> Plan:
    now = timezone.now()
    plan = decide(batch, now=now)
    if not guard:
        plan_write(plan, by=by, now=now)
        return plan
    try:
        with transaction.atomic():
            plan_write(plan, by=by, now=now)
    except (DataError, psycopg.DataError) as exc:  # COPY raises psycopg's own, unwrapped
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        plan = Plan(
            outcomes=[
                review(e, errors.InvalidValueError(f"The database rejected a value: {message}")) for e in batch.entries
            ]
        )
        plan_write(plan, by=by, now=now)
    return plan


def staging_entry_force_match(
    *,
    entry: StagingEntry,
    target_entry_id: Any,
    by,
    reason: str = "",
    write_off: bool = False,
    difference_account_id: Any = None,
) -> StagingEntry:
    """An operator's forced match of `entry` (in review, locked by the caller) with the expected leg
    `target_entry_id` on its account, as a batch of one. With `write_off` the amounts need not agree within the
    tolerance: the whole difference is booked on the rule's difference account, else on `difference_account_id`
    (checked by the caller: same merchant and currency). Raises NotFoundError, PeriodClosedConflict,
    IllegalStateError or UnprocessableError (nothing written) when the match is not possible."""
    pairs = entries_lock([WorkItem(entry.pk, target_entry_id=target_entry_id)])
    if not pairs:
        raise errors.IllegalStateError(f"Cannot match a staging entry that is {entry.status}.")
    batch = batch_load(mode=FORCED, pairs=pairs, reason=reason)
    batch.write_off, batch.difference_account_id = write_off, difference_account_id
    now = timezone.now()
    plan_write(decide(batch, now=now), by=by, now=now)
    return pairs[0][1]


def staging_entry_force_group(
    *, entry: StagingEntry, transaction_ids: Sequence[Any], by, reason: str, write_off: bool = False
) -> StagingEntry:
    """An operator's resolution of a payout in review (one_to_many, locked by the caller): settle the chosen
    members of its group (a split leaves the others open) as a batch of one. Without `write_off` the sums must
    agree within the rule's tolerance; with it the whole difference is booked pro rata on the rule's difference
    account. Raises IllegalStateError or UnprocessableError (nothing written) when it is not possible."""
    pairs = entries_lock([WorkItem(entry.pk, target_entry_id="group")])
    if not pairs:
        raise errors.IllegalStateError(f"Cannot resolve a staging entry that is {entry.status}.")
    batch = batch_load(mode=ProcessingMode.CONFIRMATION, pairs=pairs)
    batch.chosen, batch.write_off = {uuid.UUID(str(t)) for t in transaction_ids}, write_off
    now = timezone.now()
    plan = decide(batch, now=now)
    (outcome,) = plan.outcomes
    if outcome.to_status != StagingStatus.PROCESSED or "group" not in outcome.metadata:
        raise errors.UnprocessableError(outcome.metadata.get("error") or "The entry is not a payout of a group.")
    why = "forced group match with write-off" if write_off else "forced group match"
    plan.outcomes = [
        dataclasses.replace(
            outcome,
            from_status=StagingStatus.NEEDS_MANUAL_REVIEW,
            metadata={**outcome.metadata, "resolved_by_operator": True},
            reason=f"{why}: {reason}",
        )
    ]
    plan.fulfilments = [dataclasses.replace(f, why=why) for f in plan.fulfilments]
    plan_write(plan, by=by, now=now)
    return pairs[0][1]
