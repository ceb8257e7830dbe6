"""Task ledger services: create, claim, complete, retry/fail, rescue, cancel, operator retry, prune, stats.

Worker-side changes (claim, complete, retry, fail, rescue) are set-based: `QuerySet.update` filtered on the
source state (and on `locked_by` for the worker that holds the task), with audit rows bulk-inserted in the
same transaction. Operator actions go through the FSM transitions of `ProcessTracker`."""

import datetime as dt
import logging
import traceback
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, Min, Subquery, Value, When
from django.utils import timezone

from tracker import audit, registry, wakeup
from tracker.bulk import insert_select_sql, models_from_rows, select_columns
from tracker.errors import LeaseLost, TaskNotFound, TaskStateConflict, is_retryable
from tracker.models import (DUE_STATUSES, FINISHED_STATUSES, ONE_PER_CLAIM_TYPES, ProcessTracker, TaskStatus,
                            Transition)

S = TaskStatus
log = logging.getLogger(__name__)


@dataclass
class TaskSpec:
    task_type: str
    payload: dict
    tenant: str = ""
    dedupe_key: str | None = None
    run_after: dt.datetime | None = None
    priority: int | None = None  # None: the handler's


def _build(spec: TaskSpec, now: dt.datetime) -> ProcessTracker:
    handler = registry.get(spec.task_type)
    priority = handler.priority if spec.priority is None else spec.priority
    return ProcessTracker(task_type=spec.task_type, payload=spec.payload, tenant=str(spec.tenant or ""),
                          queue=handler.queue, priority=priority, max_attempts=handler.get_max_attempts(),
                          dedupe_key=spec.dedupe_key, run_after=spec.run_after or now, created_at=now)


def task_create(*, task_type: str, payload: dict, tenant: str = "", dedupe_key: str | None = None,
                run_after: dt.datetime | None = None, priority: int | None = None) -> ProcessTracker:
    """Inserts a PENDING task in the caller's transaction (transactional outbox) and wakes the consumers
    when that transaction commits. `priority` overrides the handler's (lower runs first)."""
    return task_create_many([TaskSpec(task_type, payload, tenant, dedupe_key, run_after, priority)])[0]


def task_create_many(specs: Sequence[TaskSpec]) -> list[ProcessTracker]:
    """Bulk form of `task_create`: one INSERT, one wake-up."""
    now = timezone.now()
    with transaction.atomic():
        tasks = ProcessTracker.objects.bulk_create([_build(s, now) for s in specs], batch_size=1000)
        wakeup.notify()
    return tasks


# Every column of a task row written by `task_insert_from_table`, with its value (COPY and INSERT ... SELECT apply
# no Django defaults); tests/tracker/test_services.py checks it covers the model's concrete fields.
TASK_FROM_TABLE_VALUES = {
    "task_id": "src.task_id", "task_type": "%(task_type)s", "queue": "%(queue)s", "priority": "%(priority)s",
    "tenant": "%(tenant)s", "payload": "src.payload", "status": "%(status)s", "attempts": "0",
    "max_attempts": "%(max_attempts)s", "run_after": "%(now)s", "lease_expires_at": "NULL", "locked_by": "''",
    "dedupe_key": "NULL", "last_error": "''", "error_details": "''", "created_at": "%(now)s", "updated_at": "%(now)s",
    "processing_started_at": "NULL", "completed_at": "NULL",
}


def task_insert_from_table(*, task_type: str, tenant: str, table: str, now: dt.datetime | None = None,
                           skip_existing: bool = True) -> int:
    """Set-based `task_create_many` for PostgreSQL: one PENDING task of `task_type` for each row of `table` (a
    table, typically a COPY's temporary table, with columns `task_id uuid` and `payload jsonb`), with queue,
    priority and max_attempts from the registry, as `task_create` would. ON CONFLICT DO NOTHING (a task id already
    there is skipped) unless `skip_existing` is False (ids known to be new: the check costs ~5 µs a row, and a
    clash then raises). Runs in the caller's transaction and wakes the consumers at its commit. Returns the number
    of tasks inserted."""
    handler = registry.get(task_type)
    now = now or timezone.now()
    sql = insert_select_sql(ProcessTracker._meta.db_table, TASK_FROM_TABLE_VALUES, f"{table} AS src")
    with connection.cursor() as cursor:
        cursor.execute(sql + (" ON CONFLICT DO NOTHING" if skip_existing else ""), {
            "task_type": task_type, "queue": handler.queue, "priority": handler.priority,
            "tenant": str(tenant or ""), "status": S.PENDING, "max_attempts": handler.get_max_attempts(), "now": now})
        inserted = cursor.rowcount
    if inserted:
        wakeup.notify()
    return inserted


# --- claiming and running (worker side) ---------------------------------------------------------------

def _lease_seconds_by_type() -> tuple[int, dict[str, int]]:
    """The default lease length and the task types that override it."""
    default = settings.TRACKER["LEASE_SECONDS"]
    overrides = {t: h.get_lease_seconds() for t in registry.all_types()
                 if (h := registry.get(t)).get_lease_seconds() != default}
    return default, overrides


def _lease_until(now: dt.datetime) -> Case | Value:
    """Lease expiry per task type, as an ORM expression."""
    default, overrides = _lease_seconds_by_type()
    at = lambda seconds: Value(now + dt.timedelta(seconds=seconds))  # noqa: E731
    return Case(*[When(task_type=t, then=at(s)) for t, s in overrides.items()], default=at(default))


def task_claim(*, worker_id: str, limit: int, queues: Iterable[str] | None = None) -> list[ProcessTracker]:
    """Claims up to `limit` due tasks (FOR UPDATE SKIP LOCKED): PROCESSING, attempts + 1, leased to
    `worker_id`. Commits before returning, so the claim survives the handler's rollback."""
    now = timezone.now()
    queues = list(queues or [])
    with transaction.atomic():
        rows = _claim(worker_id, limit, queues, now)
        if rows:
            audit.record_many(ProcessTracker, [(t.task_id, src, S.PROCESSING) for t, src in rows], by=worker_id,
                              reason="claimed")
    return [t for t, _ in rows]


def _claim(worker_id, limit, queues, now) -> list[tuple[ProcessTracker, str]]:
    """One statement: pick due rows in claim order, skip locked ones, mark them PROCESSING, return them
    with their previous status. The update joins the picked (id, status) pairs as an unnest of two arrays
    read from the same materialized CTE (so in the same order): the planner then loops over the primary key,
    where a join with the CTE itself let it hash the whole table when its statistics lagged behind a
    fast-changing queue. Task types that are `one_per_claim` (ONE_PER_CLAIM_TYPES) are picked at most once per
    claim, each half of the pick walking its own partial due index."""
    table = ProcessTracker._meta.db_table
    default, overrides = _lease_seconds_by_type()
    lease_sql = f"CASE t.task_type {'WHEN %s THEN %s ' * len(overrides)}ELSE %s END" if overrides else "%s"
    lease_params = [v for t, s in overrides.items() for v in (t, now + dt.timedelta(seconds=s))]
    lease_params.append(now + dt.timedelta(seconds=default))
    queue_sql = "AND queue = ANY(%s)" if queues else ""
    single = list(ONE_PER_CLAIM_TYPES)
    pick = f"""SELECT task_id, status FROM {table}
            WHERE status IN ('PENDING', 'RETRY') AND run_after <= %s {queue_sql} {{type_sql}}
            ORDER BY priority, run_after, task_id LIMIT %s FOR UPDATE SKIP LOCKED"""
    not_single = " AND ".join(["task_type <> %s"] * len(single))
    any_single = " OR ".join(["task_type = %s"] * len(single))
    due_sql = (f"rest AS ({pick.format(type_sql=f'AND {not_single}')}), "
               f"one AS ({pick.format(type_sql=f'AND ({any_single})')}), "
               "due AS MATERIALIZED (SELECT task_id, status FROM rest UNION ALL SELECT task_id, status FROM one)")
    due_params = [now, *([queues] if queues else []), *single, limit,
                  now, *([queues] if queues else []), *single, 1]
    sql = f"""
        WITH {due_sql}
        UPDATE {table} AS t SET status = 'PROCESSING', attempts = t.attempts + 1, locked_by = %s,
            lease_expires_at = {lease_sql}, processing_started_at = %s, updated_at = %s
        FROM unnest(ARRAY(SELECT task_id FROM due), ARRAY(SELECT status FROM due)) AS d(task_id, status)
        WHERE t.task_id = d.task_id
        RETURNING {select_columns(ProcessTracker, "t")}, d.status"""
    params = [*due_params, worker_id, *lease_params, now, now]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return sorted(zip(models_from_rows(ProcessTracker, rows), (row[-1] for row in rows)),
                  key=lambda pair: (pair[0].priority, pair[0].run_after, pair[0].task_id))


def task_renew_leases(*, worker_id: str) -> int:
    """Extends the leases of every task `worker_id` is processing (its heartbeat). Skips rows locked right now
    (SKIP LOCKED): the worker's own batch completes its tasks at the start of its transaction, and the
    heartbeat must not wait for that batch to commit."""
    now = timezone.now()
    held = ProcessTracker.objects.filter(status=S.PROCESSING, locked_by=worker_id).select_for_update(
        skip_locked=True).values("task_id")
    with transaction.atomic():
        return ProcessTracker.objects.filter(task_id__in=Subquery(held)).update(lease_expires_at=_lease_until(now),
                                                                              updated_at=now)


def task_complete_many(*, task_ids: Sequence, worker_id: str) -> None:
    """Marks tasks COMPLETED. Called inside the handler's transaction; raises LeaseLost (rolling the
    handler's writes back) when any of them is no longer held by `worker_id`."""
    now = timezone.now()
    done = ProcessTracker.objects.filter(task_id__any=task_ids, status=S.PROCESSING, locked_by=worker_id).update(
        status=S.COMPLETED, completed_at=now, lease_expires_at=None, updated_at=now, last_error="")
    if done != len(task_ids):
        raise LeaseLost(f"{len(task_ids) - done} of {len(task_ids)} tasks are no longer held by {worker_id}.")
    audit.record_many(ProcessTracker, [(tid, S.PROCESSING, S.COMPLETED) for tid in task_ids], by=worker_id,
                      reason="completed")


def task_record_failure(*, task: ProcessTracker, worker_id: str, exc: BaseException) -> str | None:
    """After a failed run (its transaction rolled back): RETRY with backoff, or FAILED when the error is
    permanent or the attempts are spent. Returns the new status, or None if the lease was lost."""
    now = timezone.now()
    message = f"{type(exc).__name__}: {exc}"[:2000]
    details = "".join(traceback.format_exception(exc))[-20000:]
    try:
        handler = registry.get(task.task_type)
    except Exception:
        handler = registry.TaskHandler()
    final = not is_retryable(exc) or task.attempts >= task.max_attempts
    values = {"last_error": message, "error_details": details, "lease_expires_at": None, "updated_at": now}
    if final:
        values.update(status=S.FAILED, completed_at=now)
    else:
        values.update(status=S.RETRY, run_after=now + dt.timedelta(seconds=handler.backoff(task.attempts)))
    with transaction.atomic():
        changed = ProcessTracker.objects.filter(
            task_id=task.task_id, status=S.PROCESSING, locked_by=worker_id).update(**values)
        if not changed:
            return None
        audit.record_many(ProcessTracker, [(task.task_id, S.PROCESSING, values["status"])], by=worker_id,
                          reason=message)
    return values["status"]


def task_rescue(*, limit: int = 1000) -> dict:
    """Tasks whose lease expired (their worker died or hung): back to RETRY (the attempt counts) or FAILED
    when no attempts are left. Skips rows a live worker is updating right now."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(ProcessTracker.objects.filter(status=S.PROCESSING, lease_expires_at__lt=now)
                    .select_for_update(skip_locked=True)
                    .values_list("task_id", "attempts", "max_attempts", "task_type", "locked_by")[:limit])
        if not rows:
            return {"retried": 0, "failed": 0}
        fail_ids = [r[0] for r in rows if r[1] >= r[2]]
        retry_rows = [r for r in rows if r[1] < r[2]]
        error = "Lease expired: the worker stopped renewing it (rescued)."
        common = {"lease_expires_at": None, "updated_at": now, "last_error": error}
        if fail_ids:
            ProcessTracker.objects.filter(task_id__in=fail_ids, status=S.PROCESSING).update(
                status=S.FAILED, completed_at=now, **common)
        if retry_rows:
            delays = {(r[3], r[1]) for r in retry_rows}
            run_after = Case(*[When(task_type=t, attempts=a, then=Value(now + dt.timedelta(
                seconds=_handler_or_default(t).backoff(a)))) for t, a in delays], default=Value(now))
            ProcessTracker.objects.filter(task_id__in=[r[0] for r in retry_rows], status=S.PROCESSING).update(
                status=S.RETRY, run_after=run_after, **common)
        audit.record_many(ProcessTracker, [(r[0], S.PROCESSING, S.FAILED if r[0] in fail_ids else S.RETRY)
                                           for r in rows], by="rescuer", reason=error)
    if rows:
        log.warning("rescued %d tasks with expired leases (%d failed)", len(rows), len(fail_ids))
    return {"retried": len(retry_rows), "failed": len(fail_ids)}


def _handler_or_default(task_type: str) -> registry.TaskHandler:
    try:
        return registry.get(task_type)
    except Exception:
        return registry.TaskHandler()


# --- operator actions ---------------------------------------------------------------------------------

def _locked(task_id) -> ProcessTracker:
    """The task row, locked for update; TaskNotFound for unknown ids of any shape."""
    try:
        return ProcessTracker.objects.select_for_update().get(pk=uuid.UUID(str(task_id)))
    except (ValueError, ProcessTracker.DoesNotExist):
        raise TaskNotFound() from None


def task_cancel(*, task_id, by=None, reason: str = "cancelled by operator") -> ProcessTracker:
    """PENDING or RETRY -> CANCELLED; anything else is a 409."""
    with transaction.atomic():
        task = _locked(task_id)
        if not task.can_cancel():
            raise TaskStateConflict(f"Task is {task.status}; only PENDING or RETRY tasks can be cancelled.")
        task.cancel(by=by, reason=reason)
        task.save()
    return task


def task_retry(*, task_id, by=None, reason: str = "retried by operator") -> ProcessTracker:
    """FAILED or CANCELLED -> PENDING with a fresh set of attempts; anything else is a 409."""
    with transaction.atomic():
        task = _locked(task_id)
        if not task.can_retry():
            raise TaskStateConflict(f"Task is {task.status}; only FAILED or CANCELLED tasks can be retried.")
        task.operator_retry(by=by, reason=reason)
        task.save()
    return task


def task_act_many(*, queryset, action: str, by=None, dry_run: bool = False) -> tuple[int, int]:
    """Applies `retry` or `cancel` to each task of `queryset` that is in a legal state for it; returns
    (done, skipped). Meant for operator-sized selections (admin actions, commands)."""
    legal = {"retry": (S.FAILED, S.CANCELLED), "cancel": DUE_STATUSES}[action]
    service = {"retry": task_retry, "cancel": task_cancel}[action]
    total = queryset.count()
    ids = list(queryset.filter(status__in=legal).values_list("task_id", flat=True))
    if dry_run:
        return len(ids), total - len(ids)
    done = 0
    for task_id in ids:
        try:
            service(task_id=task_id, by=by)
            done += 1
        except TaskStateConflict:
            pass  # changed state since we looked
    return done, total - done


# --- maintenance and reads ----------------------------------------------------------------------------

def task_prune(*, older_than_days: int | None = None, batch: int = 5000) -> int:
    """Deletes finished tasks (and their audit rows) that finished more than the retention ago."""
    days = settings.TRACKER["RETENTION_DAYS"] if older_than_days is None else older_than_days
    cutoff = timezone.now() - dt.timedelta(days=days)
    from django.contrib.contenttypes.models import ContentType

    ct = ContentType.objects.get_for_model(ProcessTracker)
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(ProcessTracker.objects.filter(status__in=FINISHED_STATUSES, completed_at__lt=cutoff)
                       .values_list("task_id", flat=True)[:batch])
            if not ids:
                return deleted
            Transition.objects.filter(content_type=ct, object_id__in=[str(i) for i in ids]).delete()
            deleted += ProcessTracker.objects.filter(task_id__in=ids).delete()[0]


def task_stats(*, queryset=None) -> dict:
    """Counts per status and per type, oldest due task age, throughput of the last minute and hour."""
    qs = ProcessTracker.objects.all() if queryset is None else queryset
    now = timezone.now()
    by_status = {s: 0 for s in S.values}
    by_status.update(dict(qs.values_list("status").annotate(n=Count("pk")).order_by()))
    by_type: dict[str, dict[str, int]] = {}
    for task_type, status, n in qs.values_list("task_type", "status").annotate(n=Count("pk")).order_by():
        by_type.setdefault(task_type, {})[status] = n
    oldest = qs.filter(status__in=DUE_STATUSES, run_after__lte=now).aggregate(m=Min("run_after"))["m"]
    done = qs.filter(status=S.COMPLETED)
    return {
        "by_status": by_status,
        "by_type": by_type,
        "oldest_due_age_seconds": round((now - oldest).total_seconds(), 3) if oldest else None,
        "throughput": {
            "last_minute": done.filter(completed_at__gte=now - dt.timedelta(minutes=1)).count(),
            "last_hour": done.filter(completed_at__gte=now - dt.timedelta(hours=1)).count(),
        },
        "failed_last_hour": qs.filter(status=S.FAILED, completed_at__gte=now - dt.timedelta(hours=1)).count(),
    }
