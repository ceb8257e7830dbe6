"""Counters that are cheap to read: tasks finished per minute, and tasks now in each status.

Finished tasks (`tracker_task_counter`): every statement that finishes tasks (complete, fail, retry, rescue,
cancel) feeds its changed rows to `FINISHED_UPSERT` in the same statement or transaction: one upsert per
statement, keyed by minute, tenant, type, queue, outcome and worker (so two consumers never wait for each other's
counter row), with the sums of run and wait seconds. Every hour that ended (FOLD_MARGIN ago) is rolled up into
hourly rows (worker '') up to the `hours` watermark, so a day or a week is read from hourly rows plus the minutes
since the watermark (`COUNTED`); minute rows are kept COUNTER_MINUTES_HOURS (for the hour view), hourly rows
COUNTER_RETENTION_DAYS (`rollup`).

Tasks by status (`tracker_status_count` + `tracker_status_delta`): statement-level triggers on the task table
(migration 0008, `STATUS_TRIGGERS_SQL`) append one delta row per (tenant, queue, type, status) a statement changed,
so writers never contend; `compact` folds the deltas into the counts (the maintenance schedule and the consumers
call it every few seconds), and readers add both tables. Nothing here reads the task table except the per-queue
oldest-due lookups, which are index range scans (`tracker_queue_due_idx`).

Named SQL lives in this module; columns are listed by name."""

import datetime as dt
from collections import defaultdict

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tracker.models import Outcome, TaskCounter, TaskStatus

COUNTER = "tracker_task_counter"
COUNT = "tracker_status_count"
DELTA = "tracker_status_delta"
OUTCOME_OF_STATUS = {
    TaskStatus.COMPLETED: Outcome.COMPLETED,
    TaskStatus.FAILED: Outcome.FAILED,
    TaskStatus.RETRY: Outcome.RETRIED,
    TaskStatus.CANCELLED: Outcome.CANCELLED,
}

# -- status_triggers -- the task table's statement triggers: one delta row per group a statement changed.
STATUS_TRIGGERS_SQL = f"""
CREATE TABLE {DELTA} (tenant varchar(64) NOT NULL, queue varchar(64) NOT NULL, task_type varchar(64) NOT NULL,
                      status varchar(16) NOT NULL, n bigint NOT NULL);
CREATE FUNCTION tracker_status_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {DELTA} (tenant, queue, task_type, status, n)
    SELECT tenant, queue, task_type, status, count(*) FROM new_rows GROUP BY tenant, queue, task_type, status;
    RETURN NULL;
END $$;
CREATE FUNCTION tracker_status_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {DELTA} (tenant, queue, task_type, status, n)
    SELECT tenant, queue, task_type, status, sum(n) FROM (
        SELECT tenant, queue, task_type, status, -1 AS n FROM old_rows
        UNION ALL SELECT tenant, queue, task_type, status, 1 AS n FROM new_rows) AS c
    GROUP BY tenant, queue, task_type, status HAVING sum(n) <> 0;
    RETURN NULL;
END $$;
CREATE FUNCTION tracker_status_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {DELTA} (tenant, queue, task_type, status, n)
    SELECT tenant, queue, task_type, status, -count(*) FROM old_rows GROUP BY tenant, queue, task_type, status;
    RETURN NULL;
END $$;
CREATE FUNCTION tracker_status_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {DELTA};
    DELETE FROM {COUNT};
    RETURN NULL;
END $$;
CREATE TRIGGER tracker_status_ins AFTER INSERT ON process_tracker REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tracker_status_ins();
CREATE TRIGGER tracker_status_upd AFTER UPDATE ON process_tracker REFERENCING OLD TABLE AS old_rows
    NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tracker_status_upd();
CREATE TRIGGER tracker_status_del AFTER DELETE ON process_tracker REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tracker_status_del();
CREATE TRIGGER tracker_status_truncate AFTER TRUNCATE ON process_tracker
    FOR EACH STATEMENT EXECUTE FUNCTION tracker_status_truncate();
LOCK TABLE process_tracker IN SHARE MODE;
INSERT INTO {COUNT} (tenant, queue, task_type, status, n)
SELECT tenant, queue, task_type, status, count(*) FROM process_tracker GROUP BY tenant, queue, task_type, status;
"""

STATUS_TRIGGERS_REVERSE_SQL = f"""
DROP TRIGGER tracker_status_ins ON process_tracker; DROP TRIGGER tracker_status_upd ON process_tracker;
DROP TRIGGER tracker_status_del ON process_tracker; DROP TRIGGER tracker_status_truncate ON process_tracker;
DROP FUNCTION tracker_status_ins(); DROP FUNCTION tracker_status_upd(); DROP FUNCTION tracker_status_del();
DROP FUNCTION tracker_status_truncate(); DROP TABLE {DELTA};
"""

# -- finished_upsert -- counts the rows of `src` (tenant, task_type, queue, status, processing_started_at,
# run_after: the tasks just finished, in their new status) into the minute bucket. Parameters: bucket, worker,
# now (run durations end there). Rows in a status that is not an outcome are ignored.
FINISHED_UPSERT = f"""
INSERT INTO {COUNTER} AS c (resolution, bucket, tenant, task_type, queue, outcome, worker, count, run_seconds,
                            wait_seconds, run_max)
SELECT 60, %s, f.tenant, f.task_type, f.queue, f.outcome, %s, count(*), sum(f.run), sum(f.wait), max(f.run)
FROM (SELECT src.tenant, src.task_type, src.queue,
             CASE src.status WHEN 'COMPLETED' THEN 'completed' WHEN 'FAILED' THEN 'failed'
                             WHEN 'RETRY' THEN 'retried' WHEN 'CANCELLED' THEN 'cancelled' END AS outcome,
             CASE WHEN src.status = 'CANCELLED' OR src.processing_started_at IS NULL THEN 0
                  ELSE greatest(0, extract(epoch FROM %s::timestamptz - src.processing_started_at)) END AS run,
             CASE WHEN src.status = 'CANCELLED' OR src.processing_started_at IS NULL THEN 0
                  ELSE greatest(0, extract(epoch FROM src.processing_started_at - src.run_after)) END AS wait
      FROM src) AS f
WHERE f.outcome IS NOT NULL
GROUP BY f.tenant, f.task_type, f.queue, f.outcome
ORDER BY f.tenant, f.task_type, f.queue, f.outcome
ON CONFLICT (resolution, bucket, tenant, task_type, queue, outcome, worker) DO UPDATE
SET count = c.count + EXCLUDED.count, run_seconds = c.run_seconds + EXCLUDED.run_seconds,
    wait_seconds = c.wait_seconds + EXCLUDED.wait_seconds, run_max = greatest(c.run_max, EXCLUDED.run_max)
"""

# The columns a statement's RETURNING must give for FINISHED_UPSERT.
RETURNING = "tenant, task_type, queue, status, processing_started_at, run_after"


def minute(now: dt.datetime) -> dt.datetime:
    return now.replace(second=0, microsecond=0)


def finished_params(*, worker: str, now: dt.datetime) -> list:
    """The parameters of FINISHED_UPSERT, in order (none when the counters are off)."""
    return [minute(now), str(worker or "")[:128], now] if enabled() else []


def enabled() -> bool:
    """False only where the benchmark measures the rate without the finished-task counters (TRACKER_COUNTERS=0)."""
    return settings.TRACKER.get("COUNTERS", True)


def count_finished_sql(update_sql: str, answer: str = "count(*)") -> str:
    """`update_sql` (an UPDATE ... RETURNING {RETURNING}) wrapped so that the same statement counts the rows it
    finished; the statement answers `answer`, an aggregate over the rows it changed (by default their number).
    Its parameters: the update's, then `finished_params(...)` (none when the counters are off)."""
    if not enabled():
        return f"WITH src AS ({update_sql}) SELECT {answer} FROM src"
    return f"WITH src AS ({update_sql}), counted AS ({FINISHED_UPSERT} RETURNING 1) SELECT {answer} FROM src"


def record_finished(*, task_ids, worker: str, now: dt.datetime | None = None) -> None:
    """Counts the given tasks, in the status they are in now, as finished by `worker` (for the paths that change
    a task through its FSM transition: operator cancel). Called in the transaction that changed them."""
    if not enabled():
        return
    now = now or timezone.now()
    sql = f"WITH src AS (SELECT {RETURNING} FROM process_tracker WHERE task_id = ANY(%s)) {FINISHED_UPSERT}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [list(task_ids), *finished_params(worker=worker, now=now)])


# --- maintenance ----------------------------------------------------------------------------------------

# -- compact -- folds the status deltas into the counts (concurrent compactions are safe: a delta row is
# deleted by one of them; the ordered upsert takes count rows in one order).
COMPACT_SQL = f"""
WITH moved AS (DELETE FROM {DELTA} RETURNING tenant, queue, task_type, status, n)
INSERT INTO {COUNT} AS c (tenant, queue, task_type, status, n)
SELECT tenant, queue, task_type, status, sum(n) FROM moved GROUP BY tenant, queue, task_type, status
ORDER BY tenant, queue, task_type, status
ON CONFLICT (tenant, queue, task_type, status) DO UPDATE SET n = c.n + EXCLUDED.n
"""

# -- rollup_hours -- the minute rows of the hours in [watermark, new watermark) added to hourly rows of worker ''
# (the minute rows stay, for the hour view, until COUNTER_MINUTES_HOURS).
ROLLUP_SQL = f"""
INSERT INTO {COUNTER} AS c (resolution, bucket, tenant, task_type, queue, outcome, worker, count, run_seconds,
                            wait_seconds, run_max)
SELECT 3600, date_trunc('hour', bucket), tenant, task_type, queue, outcome, '', sum(count), sum(run_seconds),
       sum(wait_seconds), max(run_max)
FROM {COUNTER} WHERE resolution = 60 AND bucket >= %s AND bucket < %s
GROUP BY 2, 3, 4, 5, 6 ORDER BY 2, 3, 4, 5, 6
ON CONFLICT (resolution, bucket, tenant, task_type, queue, outcome, worker) DO UPDATE
SET count = c.count + EXCLUDED.count, run_seconds = c.run_seconds + EXCLUDED.run_seconds,
    wait_seconds = c.wait_seconds + EXCLUDED.wait_seconds, run_max = greatest(c.run_max, EXCLUDED.run_max)
"""
HOURS_MARK_SQL = "(SELECT at FROM tracker_counter_watermark WHERE name = 'hours')"
# Each finished task counted once over the whole retention: hourly rows before the `hours` watermark, minute rows
# from it on. Both halves are range scans of tracker_counter_key (resolution, bucket, ...).
COUNTED = (
    f"((resolution = 3600 AND bucket < coalesce({HOURS_MARK_SQL}, '-infinity'))"
    f" OR (resolution = 60 AND bucket >= coalesce({HOURS_MARK_SQL}, '-infinity')))"
)


# -- fold_totals -- the counters' rows in [watermark, new watermark) added to the all-time totals.
FOLD_SQL = f"""
INSERT INTO tracker_task_total AS t (tenant, task_type, queue, outcome, count, run_seconds, wait_seconds)
SELECT tenant, task_type, queue, outcome, sum(count), sum(run_seconds), sum(wait_seconds) FROM {COUNTER}
WHERE resolution = 60 AND bucket >= %s AND bucket < %s GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (tenant, task_type, queue, outcome) DO UPDATE
SET count = t.count + EXCLUDED.count, run_seconds = t.run_seconds + EXCLUDED.run_seconds,
    wait_seconds = t.wait_seconds + EXCLUDED.wait_seconds
"""
# Minutes a bucket stays open to late commits (a transaction that upserted into it before committing) before it is
# folded into the totals.
FOLD_MARGIN = dt.timedelta(minutes=15)


def fold_totals(*, now: dt.datetime | None = None) -> None:
    """Adds the counter rows that are older than FOLD_MARGIN and not yet folded to `tracker_task_total`, and moves
    the watermark; concurrent calls serialize on the watermark row."""
    _advance(name="totals", sql=FOLD_SQL, upto=minute((now or timezone.now()) - FOLD_MARGIN))


def rollup_hours(*, now: dt.datetime | None = None) -> int:
    """Adds the minute rows of every hour that ended more than FOLD_MARGIN ago and is not yet rolled up to the
    hourly rows, and moves the `hours` watermark (readers of COUNTED switch from those minute rows to the hourly
    ones in the same commit); concurrent calls serialize on the watermark row. Returns the hourly rows written."""
    upto = ((now or timezone.now()) - FOLD_MARGIN).replace(minute=0, second=0, microsecond=0)
    return _advance(name="hours", sql=ROLLUP_SQL, upto=upto)


def _advance(*, name: str, sql: str, upto: dt.datetime) -> int:
    """Runs `sql` (parameters: watermark, upto) over the minute rows in [watermark `name`, upto) and moves the
    watermark to `upto`, in one transaction. A watermark not yet set starts at the first minute row's hour (the
    minute rows before the first rollup have no hourly rows)."""
    from tracker.models import CounterWatermark

    with transaction.atomic():
        mark = CounterWatermark.objects.select_for_update().filter(name=name).first()
        if mark is None:
            first = TaskCounter.objects.filter(resolution=60).order_by("bucket").values_list("bucket", flat=True)
            start = first.first()
            start = start.replace(minute=0, second=0, microsecond=0) if start else upto
            mark, _ = CounterWatermark.objects.select_for_update().get_or_create(name=name, defaults={"at": start})
        if upto <= mark.at:
            return 0
        with connection.cursor() as cursor:
            cursor.execute(sql, [mark.at, upto])
            written = cursor.rowcount
        CounterWatermark.objects.filter(name=name).update(at=upto)
    return written


def all_time_totals(*, group_by=("task_type", "outcome")) -> list[tuple]:
    """Finished tasks of all time (the folded totals plus the counter rows since the watermark), grouped by
    `group_by`; each row: (*group values, count, run_seconds, wait_seconds)."""
    assert set(group_by) <= {"task_type", "queue", "outcome", "tenant"}, group_by
    cols = ", ".join(group_by)
    sql = f"""SELECT {cols}, sum(count)::bigint, sum(run_seconds), sum(wait_seconds) FROM (
                  SELECT {cols}, count, run_seconds, wait_seconds FROM tracker_task_total
                  UNION ALL SELECT {cols}, count, run_seconds, wait_seconds FROM {COUNTER}
                  WHERE resolution = 60
                    AND bucket >= coalesce((SELECT at FROM tracker_counter_watermark WHERE name = 'totals'),
                                           '-infinity')) AS s
              GROUP BY {cols} ORDER BY {cols}"""
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def compact() -> None:
    """Folds the status deltas into the status counts."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(COMPACT_SQL)


def rollup(*, now: dt.datetime | None = None) -> dict:
    """Every minute (maintenance): the ended hours rolled up (`rollup_hours`) and the minutes folded into the totals
    (`fold_totals`); minute rows older than COUNTER_MINUTES_HOURS (and so in both) deleted, and every row older
    than COUNTER_RETENTION_DAYS. Returns the numbers of hourly rows written and of rows deleted."""
    now = now or timezone.now()
    cfg = settings.TRACKER
    rolled = rollup_hours(now=now)
    fold_totals(now=now)
    cutoff = now - dt.timedelta(hours=cfg["COUNTER_MINUTES_HOURS"])
    expired = now - dt.timedelta(days=cfg["COUNTER_RETENTION_DAYS"])
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {COUNTER} WHERE resolution = 60 AND bucket < least(%s, {HOURS_MARK_SQL},"
            " (SELECT at FROM tracker_counter_watermark WHERE name = 'totals'))",
            [cutoff],
        )
        deleted = cursor.rowcount
        cursor.execute(f"DELETE FROM {COUNTER} WHERE bucket < %s", [expired])
        deleted += cursor.rowcount
        cursor.execute("DELETE FROM tracker_queue_sample WHERE minute < %s", [expired])
    return {"rolled_up": rolled, "deleted": deleted}


# --- reads ----------------------------------------------------------------------------------------------


def _tenant_sql(tenants, column: str = "tenant") -> tuple[str, list]:
    """A WHERE fragment limiting to `tenants` (None: every tenant)."""
    if tenants is None:
        return "TRUE", []
    return f"{column} = ANY(%s)", [sorted(tenants)]


def status_counts(*, tenants=None) -> list[tuple[str, str, str, int]]:
    """(queue, task_type, status, n) of tasks now, for the given tenants (None: all), n > 0 only."""
    where, params = _tenant_sql(tenants)
    sql = f"""SELECT queue, task_type, status, sum(n)::bigint FROM (
                  SELECT tenant, queue, task_type, status, n FROM {COUNT}
                  UNION ALL SELECT tenant, queue, task_type, status, n FROM {DELTA}) AS s
              WHERE {where} GROUP BY queue, task_type, status HAVING sum(n) <> 0 ORDER BY 1, 2, 3"""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(q, t, s, int(n)) for q, t, s, n in cursor.fetchall()]


def finished_totals(
    *, since: dt.datetime | None = None, tenants=None, group_by=("task_type", "outcome"), worker: str | None = None
) -> list[tuple]:
    """Finished-task counts summed over the buckets that start at or after `since` (None: everything kept),
    grouped by `group_by` columns; each row: (*group values, count, run_seconds, wait_seconds, run_max). A `since`
    within the minute rows' retention reads minute rows (exact to the minute; `worker` is known there only), an
    older one or None the hourly rows and the minutes after them (COUNTED)."""
    allowed = {"task_type", "queue", "outcome", "tenant", "worker"}
    assert set(group_by) <= allowed, group_by
    where, params = _tenant_sql(tenants)
    where += " AND " + _resolution_sql(since)
    if since is not None:
        where += " AND bucket >= %s"
        params.append(since)
    if worker is not None:
        where += " AND worker = %s"
        params.append(worker)
    cols = ", ".join(group_by)
    select_cols = f"{cols}, " if cols else ""
    group = f"GROUP BY {cols} ORDER BY {cols}" if cols else ""
    sql = (
        f"SELECT {select_cols}coalesce(sum(count), 0)::bigint, coalesce(sum(run_seconds), 0),"
        f" coalesce(sum(wait_seconds), 0), coalesce(max(run_max), 0) FROM {COUNTER} WHERE {where} {group}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _resolution_sql(since: dt.datetime | None, step_seconds: int = 60) -> str:
    """Which counter rows a read from `since` on adds up: minute rows when its steps are minutes and they reach back
    to `since` (kept COUNTER_MINUTES_HOURS), else hourly rows and the minutes after them (COUNTED)."""
    kept = timezone.now() - dt.timedelta(hours=settings.TRACKER["COUNTER_MINUTES_HOURS"] - 1)
    if step_seconds % 3600 and since is not None and since >= kept:
        return "resolution = 60"
    return COUNTED


def last_minute_completed(*, now: dt.datetime, tenants=None, by: str = "queue") -> dict[str, int]:
    """Tasks completed in the last 60 seconds per `by` (queue or task_type), from the minute buckets: the current
    bucket plus the share of the previous one that is still inside the window."""
    current = minute(now)
    previous = current - dt.timedelta(minutes=1)
    share = 1.0 - (now - current).total_seconds() / 60.0
    where, params = _tenant_sql(tenants)
    sql = (
        f"SELECT {by}, bucket, sum(count)::bigint FROM {COUNTER} WHERE resolution = 60 AND bucket >= %s"
        f" AND outcome = 'completed' AND {where} GROUP BY {by}, bucket"
    )
    out: dict[str, float] = defaultdict(float)
    with connection.cursor() as cursor:
        cursor.execute(sql, [previous, *params])
        for key, bucket, n in cursor.fetchall():
            out[key] += n if bucket >= current else n * share
    return {k: round(v) for k, v in out.items()}


def series(*, since: dt.datetime, step_seconds: int, tenants=None, by=("outcome",)) -> dict:
    """Finished tasks per bucket of `step_seconds` (60 or a multiple; a multiple of 3600 reads the hourly rows and
    the minutes since the last rollup, anything else minute rows) since `since`, split by each of the `by`
    columns (outcome, task_type, queue) from one query: {"buckets": [datetime...], column: {key: [count per
    bucket]}, "totals": {(values of `by`): [count, run_seconds, wait_seconds, run_max]}}."""
    by = tuple(by)
    assert set(by) <= {"outcome", "task_type", "queue"}
    where, params = _tenant_sql(tenants)
    cols = ", ".join(by)
    start = dt.datetime.fromtimestamp((since.timestamp() // step_seconds) * step_seconds, tz=dt.UTC)
    sql = (
        f"SELECT date_bin(make_interval(secs => %s), bucket, 'epoch'::timestamptz) AS b, {cols},"
        f" sum(count)::bigint, sum(run_seconds), sum(wait_seconds), max(run_max)"
        f" FROM {COUNTER} WHERE {_resolution_sql(start, step_seconds)} AND bucket >= %s AND {where}"
        f" GROUP BY 1, {cols}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [step_seconds, start, *params])
        rows = cursor.fetchall()
    now = timezone.now()
    buckets = []
    at = start
    while at <= now:
        buckets.append(at)
        at += dt.timedelta(seconds=step_seconds)
    index = {b: i for i, b in enumerate(buckets)}
    out: dict[str, dict[str, list[int]]] = {column: {} for column in by}
    totals: dict[tuple, list] = {}  # per combination of the `by` values: count, run, wait, run_max
    for row in rows:
        keys, (n, run, wait, run_max) = row[1 : 1 + len(by)], row[1 + len(by) :]
        total = totals.setdefault(tuple(keys), [0, 0.0, 0.0, 0.0])
        total[0], total[1], total[2], total[3] = total[0] + n, total[1] + run, total[2] + wait, max(total[3], run_max)
        i = index.get(row[0].astimezone(dt.UTC))
        if i is None:
            continue
        for column, key in zip(by, keys, strict=True):
            out[column].setdefault(key, [0] * len(buckets))[i] += int(n)
    return {"buckets": buckets, "totals": totals, **{column: dict(sorted(v.items())) for column, v in out.items()}}


# -- queue_oldest_due -- per queue, the oldest due task and how many due-status tasks are not yet due: two
# index range scans of tracker_queue_due_idx each (a LATERAL per queue name).
QUEUE_DUE_SQL = """
SELECT q.name,
       (SELECT min(t.run_after) FROM process_tracker t
        WHERE t.queue = q.name AND t.status IN ('PENDING', 'RETRY') AND t.run_after <= %s),
       (SELECT count(*) FROM process_tracker t
        WHERE t.queue = q.name AND t.status IN ('PENDING', 'RETRY') AND t.run_after > %s)
FROM unnest(%s::text[]) AS q(name)
"""


def queue_due(*, names, now: dt.datetime) -> dict[str, tuple[dt.datetime | None, int]]:
    """{queue: (oldest due run_after or None, number of due-status tasks not yet due)}."""
    names = sorted(set(names))
    if not names:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(QUEUE_DUE_SQL, [now, now, names])
        return {name: (oldest, int(future)) for name, oldest, future in cursor.fetchall()}


# --- tasks changed through their FSM transition (operator cancel, the admin's buttons) ------------------


def _count_fsm_cancel(sender, instance, name, source, target, **kwargs):
    """A task cancelled through its transition is counted when its row is saved, in that transaction (the row
    is read back, so its status is the saved one)."""
    from tracker.models import ProcessTracker

    if sender is not ProcessTracker or target != TaskStatus.CANCELLED or source == target:
        return
    by = (kwargs.get("method_kwargs") or {}).get("by")
    instance._count_finished_as = by.get_username() if hasattr(by, "get_username") else str(by or "")


def _count_saved(sender, instance, **kwargs):
    """Counts the cancel marked by `_count_fsm_cancel` once the row is saved (same transaction as the save)."""
    worker = instance.__dict__.pop("_count_finished_as", None)
    if worker is not None:
        record_finished(task_ids=[instance.pk], worker=worker)


def connect() -> None:
    from django.db.models.signals import post_save
    from django_fsm.signals import post_transition

    from tracker.models import ProcessTracker

    post_transition.connect(_count_fsm_cancel, dispatch_uid="tracker.counters.fsm_cancel")
    post_save.connect(_count_saved, sender=ProcessTracker, dispatch_uid="tracker.counters.saved")
