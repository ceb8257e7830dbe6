"""Task ledger services: create, claim, complete, retry/fail, rescue, cancel, operator retry, prune, stats.

Worker-side changes (claim, complete, retry, fail, rescue) and bulk operator actions are set-based: the named
statements of `tracker.queries`, each written from the `ProcessTracker` transition it makes (filtered on its source
states, and on `locked_by` for the worker that holds the task), with audit rows bulk-inserted in the same
transaction. An operator's action on one task goes through the FSM transition itself."""

import datetime as dt
import logging
import traceback
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Q, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.module_loading import import_string

from tracker import audit, counters, queries, registry, wakeup
from tracker.bulk import array_literal, execute, models_from_rows
from tracker.errors import (
    ERROR_DETAILS_CHARS,
    ERROR_MESSAGE_CHARS,
    InvalidBulkRequest,
    LeaseLost,
    TaskNotFound,
    TaskStateConflict,
    is_retryable,
)
from tracker.models import (
    DUE_STATUSES,
    FINISHED_STATUSES,
    ONE_PER_CLAIM_TYPES,
    PAYLOAD_SEARCH_KEYS,
    Outcome,
    ProcessTracker,
    TaskQueue,
    TaskStatus,
    Transition,
)

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
    return ProcessTracker(
        task_type=spec.task_type,
        payload=spec.payload,
        tenant=str(spec.tenant or ""),
        queue=handler.queue,
        priority=priority,
        max_attempts=handler.get_max_attempts(),
        dedupe_key=spec.dedupe_key,
        run_after=spec.run_after or now,
        created_at=now,
    )


def task_create(
    *,
    task_type: str,
    payload: dict,
    tenant: str = "",
    dedupe_key: str | None = None,
    run_after: dt.datetime | None = None,
    priority: int | None = None,
) -> ProcessTracker:
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


def task_insert_from_table(
    *, task_type: str, tenant: str, table: str, now: dt.datetime | None = None, skip_existing: bool = True
) -> int:
    """Set-based `task_create_many` for PostgreSQL: one PENDING task of `task_type` for each row of `table` (a
    table, typically a COPY's temporary table, with columns `task_id uuid` and `payload jsonb`), with queue,
    priority and max_attempts from the registry, as `task_create` would. ON CONFLICT DO NOTHING (a task id already
    there is skipped) unless `skip_existing` is False (ids known to be new: the check costs ~5 µs a row, and a
    clash then raises). Runs in the caller's transaction and wakes the consumers at its commit. Returns the number
    of tasks inserted."""
    handler = registry.get(task_type)
    now = now or timezone.now()
    sql = queries.TASKS_INSERT_FROM_TABLE.format(
        source=connection.ops.quote_name(table), on_conflict="ON CONFLICT DO NOTHING" if skip_existing else ""
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "task_type": task_type,
                "queue": handler.queue,
                "priority": handler.priority,
                "tenant": str(tenant or ""),
                "max_attempts": handler.get_max_attempts(),
                "now": now,
            },
        )
        inserted = cursor.rowcount
    if inserted:
        wakeup.notify()
    return inserted


def task_insert_rows(*, task_type: str, rows: Sequence[tuple[uuid.UUID, str, str]], now=None) -> int:
    """Set-based `task_create_many` for tasks whose ids the caller chose (known to be new): one PENDING task of
    `task_type` per (task_id, payload as JSON text, tenant) row, with queue, priority and max_attempts from the
    registry (TASKS_INSERT_ROWS). Runs in the caller's transaction and wakes the consumers at its commit."""
    if not rows:
        return 0
    handler = registry.get(task_type)
    task_ids, payloads, tenants = zip(*rows)
    execute(
        queries.TASKS_INSERT_ROWS,
        {
            "task_ids": array_literal(task_ids),
            "payloads": array_literal(payloads),
            "tenants": array_literal(tenants),
            "task_type": task_type,
            "queue": handler.queue,
            "priority": handler.priority,
            "max_attempts": handler.get_max_attempts(),
            "now": now or timezone.now(),
        },
        rows=False,
    )
    wakeup.notify()
    return len(rows)


# --- claiming and running (worker side) ---------------------------------------------------------------


def _lease_params(now: dt.datetime) -> dict:
    """The lease parameters of TASKS_CLAIM and LEASES_RENEW: the default expiry and the task types that override
    it with their own expiry."""
    default = settings.TRACKER["LEASE_SECONDS"]
    overrides = {t: s for t in registry.all_types() if (s := registry.get(t).get_lease_seconds()) != default}
    return {
        "lease_default": now + dt.timedelta(seconds=default),
        "lease_types": array_literal(overrides),
        "lease_until": array_literal(now + dt.timedelta(seconds=s) for s in overrides.values()),
    }


def task_claim(*, worker_id: str, limit: int, queues: Iterable[str] | None = None) -> list[ProcessTracker]:
    """Claims up to `limit` due tasks (FOR UPDATE SKIP LOCKED): PROCESSING, attempts + 1, leased to
    `worker_id`. Commits before returning, so the claim survives the handler's rollback."""
    now = timezone.now()
    queues = list(queues or [])
    restore = connection.in_atomic_block  # inside a caller's transaction, the claim puts its settings back
    with transaction.atomic():
        rows = _claim(worker_id, limit, queues, now, restore=restore)
        if rows:
            audit.record_many(
                ProcessTracker,
                [(t.task_id, src, TaskStatus.PROCESSING) for t, src in rows],
                by=worker_id,
                reason="claimed",
            )
    return [t for t, _ in rows]


def _claim_limit(task_type: str) -> int:
    from tracker.errors import UnknownTaskType

    try:
        return registry.get(task_type).get_claim_limit()
    except UnknownTaskType:  # not registered in this process: it runs none of them anyway
        return 1


def _claim(worker_id, limit, queues, now, *, restore: bool) -> list[tuple[ProcessTracker, str]]:
    """TASKS_CLAIM after CLAIM_PLAN: the claimed tasks with their previous status, in claim order. `enable_sort`
    is put back (RESTORE_SORT) when `restore`: the claim's own transaction resets it at its end anyway."""
    # Django's cursor, not a prepared statement: the claim's plan must be made for each claim's own values (the
    # backlog and the statistics change fast; see CLAIM_PLAN), where a generic plan would be kept.
    with connection.cursor() as cursor:
        cursor.execute(queries.CLAIM_PLAN)
        sort_before, _, paused, _ = cursor.fetchone()
    params = {
        "now": now,
        "queues": array_literal(queues) if queues else None,
        "paused": array_literal(paused) if paused else None,
        "limit": limit,
        "single_limit": min(limit, max(_claim_limit(t) for t in ONE_PER_CLAIM_TYPES)),
        "worker_id": worker_id,
        **_lease_params(now),
    }
    with connection.cursor() as cursor:
        cursor.execute(queries.TASKS_CLAIM, params)
        rows = cursor.fetchall()
        if restore:
            cursor.execute(queries.RESTORE_SORT, {"sort": sort_before})
    return sorted(
        zip(models_from_rows(ProcessTracker, rows), (row[-1] for row in rows)),
        key=lambda pair: (pair[0].priority, pair[0].run_after, pair[0].task_id),
    )


def task_renew_leases(*, worker_id: str) -> int:
    """Extends the leases of every task `worker_id` is processing (its heartbeat; LEASES_RENEW), except rows
    locked right now."""
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(queries.LEASES_RENEW, {"worker_id": worker_id, "now": now, **_lease_params(now)})
        return cursor.rowcount


def task_complete_many(*, task_ids: Sequence, worker_id: str) -> None:
    """Marks tasks COMPLETED and counts them (tracker.counters) in the same statement. Called inside the
    handler's transaction; raises LeaseLost (rolling the handler's writes back) when any of them is no longer held
    by `worker_id`."""
    done = task_complete_held(task_ids=task_ids, worker_id=worker_id)
    if len(done) != len(task_ids):
        raise LeaseLost(f"{len(task_ids) - len(done)} of {len(task_ids)} tasks are no longer held by {worker_id}.")


def task_complete_held(*, task_ids: Sequence, worker_id: str) -> set:
    """Marks COMPLETED (and counts, and audits) those of `task_ids` still held by `worker_id`, in the caller's
    transaction; returns their ids. The others (rescued, taken over) are left as they are."""
    if not task_ids:
        return set()
    now = timezone.now()
    [(done,)] = execute(
        counters.count_finished_sql(queries.TASKS_COMPLETE, answer="coalesce(array_agg(task_id), '{}')"),
        [now, now, array_literal(task_ids), worker_id, *counters.finished_params(worker=worker_id, now=now)],
    )
    done = set(done)
    audit.record_many(
        ProcessTracker,
        [(tid, TaskStatus.PROCESSING, TaskStatus.COMPLETED) for tid in task_ids if tid in done],
        by=worker_id,
        reason="completed",
    )
    return done


def task_record_failure(*, task: ProcessTracker, worker_id: str, exc: BaseException) -> str | None:
    """After a failed run (its transaction rolled back): RETRY with backoff, or FAILED when the error is
    permanent or the attempts are spent. Returns the new status, or None if the lease was lost."""
    now = timezone.now()
    message = f"{type(exc).__name__}: {exc}"[:ERROR_MESSAGE_CHARS]
    details = "".join(traceback.format_exception(exc))[-ERROR_DETAILS_CHARS:]
    try:
        handler = registry.get(task.task_type)
    except Exception:
        handler = registry.TaskHandler()
    final = not is_retryable(exc) or task.attempts >= task.max_attempts
    params = {"task_id": task.task_id, "worker_id": worker_id, "error": message, "details": details, "now": now}
    if final:
        move, sql = queries.FAIL, queries.TASK_FAIL
    else:
        move, sql = queries.SCHEDULE_RETRY, queries.TASK_SCHEDULE_RETRY
        params["run_after"] = now + dt.timedelta(seconds=handler.backoff(task.attempts))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            if not cursor.rowcount:
                return None
        counters.record_finished(task_ids=[task.task_id], worker=worker_id, now=now)
        audit.record_many(
            ProcessTracker, [(task.task_id, TaskStatus.PROCESSING, move.target)], by=worker_id, reason=message
        )
    return move.target


def task_rescue(*, limit: int = 1000, holders: Sequence[str] | None = None) -> dict:
    """Tasks whose lease expired (their worker died or hung), or, with `holders`, every task those worker ids
    hold (workers known to be dead, or a consumer putting back what a database error left it holding): RETRY,
    due at once (a dead worker is not the task's fault; the attempt counts, so a task that kills its worker
    still ends FAILED), or FAILED when no attempts are left. Skips rows a live worker is updating right now."""
    now = timezone.now()
    error = (
        "The worker holding it died or lost its database connection (rescued)."
        if holders
        else "Lease expired: the worker stopped renewing it (rescued)."
    )
    params = {"now": now, "limit": limit, "error": error}
    if holders:
        sql, params["holders"] = queries.TASKS_RESCUE_HELD, array_literal(holders)
    else:
        sql = queries.TASKS_RESCUE_EXPIRED
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if not rows:
            return {"retried": 0, "failed": 0}
        counters.record_finished(task_ids=[task_id for task_id, _ in rows], worker="rescuer", now=now)
        audit.record_many(
            ProcessTracker,
            [(task_id, TaskStatus.PROCESSING, status) for task_id, status in rows],
            by="rescuer",
            reason=error,
        )
        wakeup.notify()
    failed = sum(status == queries.FAIL.target for _, status in rows)
    log.warning("rescued %d tasks (%d failed)", len(rows), failed)
    return {"retried": len(rows) - failed, "failed": failed}


def task_first_lease_expiry() -> dt.datetime | None:
    """When the first lease of a PROCESSING task expires (the lease index's first row)."""
    return (
        ProcessTracker.objects.filter(status=TaskStatus.PROCESSING)
        .order_by("lease_expires_at")
        .values_list("lease_expires_at", flat=True)
        .first()
    )


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


def actor_name(by) -> str:
    """How counters and job params name an actor: a user's username, else the worker or command string."""
    if isinstance(by, AbstractBaseUser):
        return by.get_username()
    return str(by or "")


def task_act_ids(*, action: str, task_ids: Sequence, by=None, reason: str = "") -> int:
    """Set-based `retry` or `cancel` of the given tasks that are in a legal state for it (others are left as
    they are); returns how many changed. Locks the rows, changes them with one UPDATE, writes their audit rows
    and (cancel) counts them as finished, in one transaction. A retry skips a task whose dedupe key another
    unfinished task holds (and all but one of the same key among `task_ids`)."""
    legal = BULK_LEGAL[action]
    now = timezone.now()
    reason = reason or f"{action} by operator"
    with transaction.atomic():
        rows = list(
            ProcessTracker.objects.filter(task_id__any=list(task_ids), status__in=legal)
            .select_for_update()
            .order_by("task_id")
            .values_list("task_id", "status", "dedupe_key")
        )
        if action == "retry":
            keys = {k for _, _, k in rows if k}
            busy = (
                set(
                    ProcessTracker.objects.filter(dedupe_key__any=list(keys))
                    .exclude(status__in=FINISHED_STATUSES)
                    .values_list("dedupe_key", flat=True)
                )
                if keys
                else set()
            )
            kept = []
            for task_id, status, key in rows:
                if key and key in busy:
                    continue
                busy.add(key) if key else None
                kept.append((task_id, status))
            sql, target = queries.TASKS_OPERATOR_RETRY, queries.OPERATOR_RETRY.target
        else:
            kept = [(task_id, status) for task_id, status, _ in rows]
            sql, target = queries.TASKS_CANCEL, queries.CANCEL.target
        if not kept:
            return 0
        ids = [task_id for task_id, _ in kept]
        with connection.cursor() as cursor:
            cursor.execute(sql, {"now": now, "ids": array_literal(ids)})
        if action == "cancel":
            counters.record_finished(task_ids=ids, worker=actor_name(by), now=now)
        else:
            wakeup.notify()
        audit.record_many(ProcessTracker, [(task_id, src, target) for task_id, src in kept], by=by, reason=reason)
    return len(kept)


def task_act_many(*, queryset, action: str, by=None, dry_run: bool = False) -> tuple[int, int]:
    """Applies `retry` or `cancel` to the tasks of `queryset` (an operator's selection: a page at most) that are
    in a legal state for it; returns (done, skipped)."""
    total = queryset.count()
    ids = list(queryset.filter(status__in=BULK_LEGAL[action]).values_list("task_id", flat=True))
    if dry_run:
        return len(ids), total - len(ids)
    done = task_act_ids(action=action, task_ids=ids, by=by) if ids else 0
    return done, total - done


# --- bulk actions on a whole filter (shared/API.md: POST /api/tasks/bulk/) ------------------------------

BULK_ACTIONS = ("retry", "cancel")
BULK_CHUNK = 1000  # tasks changed per transaction of a bulk action
BULK_LEGAL = {"retry": queries.OPERATOR_RETRY.sources, "cancel": queries.CANCEL.sources}
BULK_FILTER_FIELDS = ("status", "task_type", "queue", "created_after", "created_before")


def task_bulk_clean(*, action: str, filter) -> dict:
    """The bulk filter, validated and JSON-ready (dates as ISO strings); InvalidBulkRequest (400) for an
    unknown action, a filter that is not an object, empty, or has an unknown field or a bad value."""
    if action not in BULK_ACTIONS:
        raise InvalidBulkRequest(
            f"action must be one of {', '.join(BULK_ACTIONS)}.", details={"action": [f"Unknown action {action!r}."]}
        )
    if not isinstance(filter, dict):
        raise InvalidBulkRequest("filter must be an object.", details={"filter": ["Must be an object."]})
    unknown = sorted(set(filter) - set(BULK_FILTER_FIELDS))
    if unknown:
        raise InvalidBulkRequest(
            f"Unknown filter field(s): {', '.join(unknown)}.",
            details={"filter": [f"Unknown field {f!r}." for f in unknown]},
        )
    clean = {k: v for k, v in filter.items() if v not in (None, "")}
    if not clean:
        raise InvalidBulkRequest(
            "The filter is empty: a bulk action needs at least one condition.",
            details={"filter": ["Give at least one of " + ", ".join(BULK_FILTER_FIELDS)]},
        )
    if "status" in clean and clean["status"] not in TaskStatus.values:
        raise InvalidBulkRequest(
            f"Unknown status {clean['status']!r}.",
            details={"filter": {"status": [f"One of {', '.join(TaskStatus.values)}."]}},
        )
    for key in ("task_type", "queue"):
        if key in clean and (not isinstance(clean[key], str) or len(clean[key]) > 64):
            raise InvalidBulkRequest(f"{key} must be a string.", details={"filter": {key: ["Must be a string."]}})
    for key in ("created_after", "created_before"):
        if key in clean:
            value = clean[key]
            when = parse_datetime(value) if isinstance(value, str) else None
            if when is None and isinstance(value, str) and (day := parse_date(value)):
                when = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
            if when is None:
                raise InvalidBulkRequest(
                    f"{key} must be a date or a date-time.",
                    details={"filter": {key: ["A date or an ISO 8601 date-time."]}},
                )
            if timezone.is_naive(when):
                when = timezone.make_aware(when, dt.UTC)
            clean[key] = when.isoformat()
    return clean


def task_bulk_queryset(*, filter: dict, tenants=None):
    """The tasks a (clean) bulk filter matches, limited to `tenants` (None: every tenant)."""
    qs = ProcessTracker.objects.all()
    if tenants is not None:
        qs = qs.filter(tenant__in=sorted(tenants))
    if "status" in filter:
        qs = qs.filter(status=filter["status"])
    if "task_type" in filter:
        qs = qs.filter(task_type=filter["task_type"])
    if "queue" in filter:
        qs = qs.filter(queue=filter["queue"])
    if "created_after" in filter:
        qs = qs.filter(created_at__gte=parse_datetime(filter["created_after"]))
    if "created_before" in filter:
        qs = qs.filter(created_at__lt=parse_datetime(filter["created_before"]))
    return qs


def task_bulk_count(*, filter: dict, tenants=None, statuses=None) -> int:
    """How many tasks a (clean) bulk filter matches, in `statuses` if given: from the status counts when the
    filter has no dates (no table scan), else a count of the rows."""
    if "created_after" in filter or "created_before" in filter:
        qs = task_bulk_queryset(filter=filter, tenants=tenants)
        return (qs.filter(status__in=statuses) if statuses is not None else qs).count()
    return sum(
        n
        for q, t, s, n in counters.status_counts(tenants=tenants)
        if (statuses is None or s in statuses)
        and filter.get("status", s) == s
        and filter.get("task_type", t) == t
        and filter.get("queue", q) == q
    )


def task_bulk_chunk(
    *,
    action: str,
    filter: dict,
    tenants=None,
    after: tuple | None = None,
    limit: int = BULK_CHUNK,
    by=None,
    reason: str = "",
    dry_run: bool = False,
) -> dict:
    """One chunk of a bulk action: the next `limit` tasks (in created_at, task_id order, after the `after`
    position) that the filter matches and that are in a legal state for `action`, changed set-based
    (`task_act_ids`). Returns {"seen", "changed", "after"}: `after` is the position to continue from (None when
    the filter is exhausted). With `dry_run` nothing changes and `changed` counts what would."""
    qs = task_bulk_queryset(filter=filter, tenants=tenants).filter(status__in=BULK_LEGAL[action])
    if after is not None:
        at, task_id = parse_datetime(after[0]), uuid.UUID(str(after[1]))
        qs = qs.filter(Q(created_at__gt=at) | Q(created_at=at, task_id__gt=task_id))
    rows = list(qs.order_by("created_at", "task_id").values_list("created_at", "task_id")[:limit])
    if not rows:
        return {"seen": 0, "changed": 0, "after": None}
    ids = [task_id for _, task_id in rows]
    changed = len(ids) if dry_run else task_act_ids(action=action, task_ids=ids, by=by, reason=reason)
    last = rows[-1]
    return {
        "seen": len(rows),
        "changed": changed,
        "after": (last[0].isoformat(), str(last[1])) if len(rows) == limit else None,
    }


def task_bulk_run(
    *, action: str, filter: dict, tenants=None, by=None, dry_run: bool = False, chunk: int = BULK_CHUNK
) -> dict:
    """A whole bulk action in this process, chunk after chunk (the command line's path; the API and the admin
    run the same chunks in a job): {"matched", "changed", "skipped"}."""
    filter = task_bulk_clean(action=action, filter=filter)
    matched = task_bulk_count(filter=filter, tenants=tenants)
    changed, after = 0, None
    while True:
        step = task_bulk_chunk(
            action=action,
            filter=filter,
            tenants=tenants,
            after=after,
            limit=chunk,
            by=by,
            dry_run=dry_run,
            reason=f"bulk {action} by {actor_name(by) or 'operator'}",
        )
        changed += step["changed"]
        after = step["after"]
        if after is None:
            break
    return {"matched": matched, "changed": changed, "skipped": max(0, matched - changed)}


# --- queues -------------------------------------------------------------------------------------------


def queue_set_paused(*, name: str, paused: bool, by=None) -> TaskQueue:
    """Pauses or resumes a queue (200 also when already so): consumers of every cluster read the paused set in
    each claim, so they stop claiming its tasks at their next claim (within POLL_SECONDS) and start again at
    resume (which wakes them). Tasks can still be created in a paused queue; running ones finish. Audited."""
    name = str(name)[:64]
    with transaction.atomic():
        queue, _ = TaskQueue.objects.select_for_update().get_or_create(name=name)
        if queue.paused != paused:
            before = "PAUSED" if queue.paused else "ACTIVE"
            queue.paused, queue.changed_at, queue.changed_by = (
                paused,
                timezone.now(),
                actor_name(by)[: audit.ACTOR_NAME_CHARS],
            )
            queue.save()
            audit.record_many(
                TaskQueue,
                [(name, before, "PAUSED" if paused else "ACTIVE")],
                by=by,
                reason="queue paused" if paused else "queue resumed",
            )
        if not paused:
            wakeup.notify()
    return queue


def queue_list(*, tenants=None, now: dt.datetime | None = None) -> list[dict]:
    """Every queue that has tasks or is paused: {"name", "paused", "due", "running", "oldest_due_seconds",
    "completed_last_minute"}, from the status counts, the minute counters and two index range scans per queue;
    limited to `tenants` (None: every tenant; then the not-yet-due tasks of a queue are not told apart by tenant,
    so `due` counts a merchant's PENDING and RETRY tasks)."""
    now = now or timezone.now()
    counts: dict[str, dict[str, int]] = {}
    for queue, _type, status, n in counters.status_counts(tenants=tenants):
        if n > 0:
            by = counts.setdefault(queue, {})
            by[status] = by.get(status, 0) + n
    paused = dict(TaskQueue.objects.values_list("name", "paused"))
    names = sorted(set(counts) | {n for n, p in paused.items() if p})
    due_info = counters.queue_due(
        names=[
            n
            for n in names
            if counts.get(n, {}).get(TaskStatus.PENDING, 0) + counts.get(n, {}).get(TaskStatus.RETRY, 0)
        ],
        now=now,
    )
    completed = counters.last_minute_completed(now=now, tenants=tenants, by="queue")
    out = []
    for name in names:
        by = counts.get(name, {})
        oldest, future = due_info.get(name, (None, 0))
        due = by.get(TaskStatus.PENDING, 0) + by.get(TaskStatus.RETRY, 0)
        if tenants is None:
            due = max(0, due - future)
        out.append(
            {
                "name": name,
                "paused": bool(paused.get(name, False)),
                "due": due,
                "running": by.get(TaskStatus.PROCESSING, 0),
                "oldest_due_seconds": round((now - oldest).total_seconds(), 3) if oldest else 0.0,
                "completed_last_minute": completed.get(name, 0),
            }
        )
    return out


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
            ids = list(
                ProcessTracker.objects.filter(status__in=FINISHED_STATUSES, completed_at__lt=cutoff).values_list(
                    "task_id", flat=True
                )[:batch]
            )
            if not ids:
                return deleted
            Transition.objects.filter(content_type=ct, object_id__in=[str(i) for i in ids]).delete()
            deleted += ProcessTracker.objects.filter(task_id__in=ids).delete()[0]


def counters_tick(*, now: dt.datetime | None = None) -> None:
    """Every few seconds (consumers) and every minute (maintenance): folds the status deltas into the counts and
    samples every queue's depth and lag into this minute's `QueueSample` rows."""
    now = now or timezone.now()
    counters.compact()
    counters.fold_totals(now=now)
    rows = queue_list(now=now)
    if not rows:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            queries.QUEUE_SAMPLES_UPSERT,
            {
                "minute": counters.minute(now),
                "queues": [r["name"] for r in rows],
                "due": [r["due"] for r in rows],
                "running": [r["running"] for r in rows],
                "lag": [r["oldest_due_seconds"] for r in rows],
            },
        )


def task_search(queryset, term: str):
    """Tasks of `queryset` a search term finds: a UUID is a task id or an id a payload carries under one of
    PAYLOAD_SEARCH_KEYS (a staging entry, a job, an upload), each an index lookup; other text is looked for
    inside the payload (a scan: narrow the list with its filters first)."""
    term = term.strip()
    if not term:
        return queryset
    try:
        value = uuid.UUID(term)
    except ValueError:
        return queryset.alias(payload_text=Cast("payload", TextField())).filter(payload_text__icontains=term)
    match = Q(task_id=value)
    for key in PAYLOAD_SEARCH_KEYS:
        match |= Q(payload__has_key=key) & Q(**{f"payload_{key}": str(value)})
    for expander in settings.TRACKER.get("SEARCH_EXPANDERS", ()):  # ids of jobs about this id (an upload's import)
        for job_id in import_string(expander)(str(value)):
            match |= Q(payload__has_key="job_id") & Q(payload_job_id=str(job_id))
    return queryset.alias(**{f"payload_{key}": KT(f"payload__{key}") for key in PAYLOAD_SEARCH_KEYS}).filter(match)


def task_stats(*, tenants=None, task_type: str | None = None, queue: str | None = None) -> dict:
    """Counts per status and per type (tasks now), oldest due task age, tasks completed in the last minute and
    hour and finished in the last hour by outcome: from the status counts and the finished-task counters
    (tracker.counters), never the task table. `tenants` limits to those merchants (None: all)."""
    now = timezone.now()
    by_status = {s: 0 for s in TaskStatus.values}
    by_type: dict[str, dict[str, int]] = {}
    queues = set()
    for q, t, status, n in counters.status_counts(tenants=tenants):
        if (task_type and t != task_type) or (queue and q != queue):
            continue
        by_status[status] = by_status.get(status, 0) + n
        by_type.setdefault(t, {})[status] = by_type.get(t, {}).get(status, 0) + n
        if status in DUE_STATUSES:
            queues.add(q)
    oldest = [o for o, _ in counters.queue_due(names=queues, now=now).values() if o] if tenants is None else []
    hour: dict[str, int] = {o: 0 for o in Outcome.values}
    for t, q, outcome, n, *_ in counters.finished_totals(
        since=counters.minute(now - dt.timedelta(hours=1)), tenants=tenants, group_by=("task_type", "queue", "outcome")
    ):
        if (task_type and t != task_type) or (queue and q != queue):
            continue
        hour[outcome] = hour.get(outcome, 0) + n
    minute = counters.last_minute_completed(now=now, tenants=tenants, by="task_type")
    return {
        "by_status": by_status,
        "by_type": by_type,
        "oldest_due_age_seconds": round((now - min(oldest)).total_seconds(), 3) if oldest else None,
        "throughput": {
            "last_minute": sum(n for t, n in minute.items() if not task_type or t == task_type),
            "last_hour": hour[Outcome.COMPLETED],
        },
        "failed_last_hour": hour[Outcome.FAILED],
        "finished_last_hour": hour,
    }
