"""The tracker's raw SQL, one named and commented statement each (the ORM writes everything else; the counters'
statements live in `tracker.counters`).

Every statement that changes a task's status is written from the transition `ProcessTracker` declares for it
(`tracker.fsm.moves`): its `status IN (...)` from the transition's sources, its `SET status = ...` from its target;
`STATEMENT_MOVES` says which statement makes which transition (tests/tracker/test_fsm.py checks both ways).
Parameters are named (`%(name)s`), except in the statements that `tracker.counters.count_finished_sql` wraps (its
upsert appends positional parameters): their parameters are listed in order in the comment. Arrays go as one text
parameter each (`tracker.bulk.array_literal`), so a statement's text is the same for every batch size and every
set of lease overrides. Columns are always listed by name."""

from tracker import counters
from tracker.bulk import select_columns
from tracker.fsm import literals, moves
from tracker.models import ONE_PER_CLAIM_TYPES, ProcessTracker, QueueSample, TaskQueue, TaskStatus

MOVES = moves(ProcessTracker)
START, COMPLETE, SCHEDULE_RETRY, FAIL = MOVES["start"], MOVES["complete"], MOVES["schedule_retry"], MOVES["fail"]
OPERATOR_RETRY, CANCEL = MOVES["operator_retry"], MOVES["cancel"]
# Leases are only renewed, completed and rescued from the state `start` enters.
PROCESSING = START.target_sql

_TABLES = {
    "task": ProcessTracker._meta.db_table,
    "queue": TaskQueue._meta.db_table,
    "sample": QueueSample._meta.db_table,
    "one_per_claim": literals(ONE_PER_CLAIM_TYPES),
    "processing": PROCESSING,
}

# The lease expiry of a task `t`: the task type's own lease when it has one (`lease_types`, `lease_until`: the
# overriding types and their expiry times, as arrays), else `lease_default`.
_LEASE = (
    "coalesce((%(lease_until)s::timestamptz[])[array_position(%(lease_types)s::text[], t.task_type::text)],"
    " %(lease_default)s)"
)

# One half of the claim's pick: due rows of the types `{types}` selects, in claim order (the order of the partial
# due indexes), in the queues asked for (`queues` NULL: every queue) that are not paused (`paused`, read by CLAIM_PLAN
# just before: a constant, where a subquery made the planner expect no row at all), skipping locked rows.
_CLAIM_PICK = """
    SELECT task_id, status FROM {task}
    WHERE status IN ({sources}) AND run_after <= %(now)s AND {types}
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
      AND (%(paused)s::text[] IS NULL OR queue <> ALL(%(paused)s::text[]))
    ORDER BY priority, run_after, task_id LIMIT {limit} FOR UPDATE SKIP LOCKED"""

# -- claim_plan --
# Before the claim, in its transaction: sorts off for that transaction (returns the previous setting, restored after
# the claim with RESTORE_SORT) and the paused queues. The backlog is often younger than the table's statistics (a
# million tasks queued at once): the planner then expected a few due rows and sorted the whole backlog read through
# the smaller tracker_queue_due_idx instead of walking tracker_due_idx in claim order. At 100,000 due tasks that cost
# a claim 260 µs a task instead of 95 (docs/operations.md, "What the counters cost"). It also lets the claim commit
# without waiting for its WAL flush (`synchronous_commit` off for its transaction, as ASYNC_COMMIT does): a claim lost
# in a database crash only delivers its tasks again, as a worker's crash does, and the handler's own (synchronous)
# commit flushes the claim's WAL before its own.
CLAIM_PLAN = """
SELECT current_setting('enable_sort'), set_config('enable_sort', 'off', true),
       ARRAY(SELECT name FROM {queue} WHERE paused ORDER BY name), set_config('synchronous_commit', 'off', true)
""".format(**_TABLES)

# -- async_commit --
# The current transaction commits without waiting for its WAL flush: only for transactions whose loss in a
# database crash re-delivers work at least once and loses nothing (a claim; a workflow step's begin).
ASYNC_COMMIT = "SELECT set_config('synchronous_commit', 'off', true)"

# -- restore_sort --
# After the claim: `enable_sort` back to what CLAIM_PLAN read (`sort`).
RESTORE_SORT = "SELECT set_config('enable_sort', %(sort)s, true)"

# -- tasks_claim --
# `start`: picks up to `limit` due tasks, at most `single_limit` of them of the claim-limited types
# (ONE_PER_CLAIM_TYPES, `get_claim_limit()`: each half of the pick walks its own partial due index), and marks them
# PROCESSING, attempts + 1, leased to `worker_id` until their lease expiry; returns every column and the status each
# was claimed from. The update joins the picked (id, status) pairs as an unnest of two arrays read from the same
# materialized CTE (so in the same order): the planner then loops over the primary key, where a join with the CTE
# itself let it hash the whole table when its statistics lagged behind a fast-changing queue.
TASKS_CLAIM = """
WITH rest AS ({rest}),
     one AS ({one}),
     due AS MATERIALIZED (SELECT task_id, status FROM rest UNION ALL SELECT task_id, status FROM one)
UPDATE {task} AS t SET status = {target}, attempts = t.attempts + 1, locked_by = %(worker_id)s,
    lease_expires_at = {lease}, processing_started_at = %(now)s, updated_at = %(now)s
FROM unnest(ARRAY(SELECT task_id FROM due), ARRAY(SELECT status FROM due)) AS d(task_id, status)
WHERE t.task_id = d.task_id
RETURNING {columns}, d.status
""".format(
    rest=_CLAIM_PICK.format(
        **_TABLES, sources=START.sources_sql, types=f"task_type NOT IN ({_TABLES['one_per_claim']})", limit="%(limit)s"
    ),
    one=_CLAIM_PICK.format(
        **_TABLES,
        sources=START.sources_sql,
        types=f"task_type IN ({_TABLES['one_per_claim']})",
        limit="%(single_limit)s",
    ),
    target=START.target_sql,
    lease=_LEASE,
    columns=select_columns(ProcessTracker, "t"),
    **_TABLES,
)

# -- leases_renew --
# A worker's heartbeat: extends the leases of every task `worker_id` holds, skipping rows locked right now (the
# worker's own batch completes its tasks at the start of its transaction, and the heartbeat must not wait for that
# batch to commit). The locking read runs once (a CTE) and the update walks the primary key over the ids it locked
# (as the claim does): a `task_id IN (locking subquery)` let the planner re-run the subquery or scan the table.
LEASES_RENEW = """
WITH held AS MATERIALIZED (
    SELECT task_id FROM {task} WHERE status = {processing} AND locked_by = %(worker_id)s FOR UPDATE SKIP LOCKED)
UPDATE {task} AS t SET lease_expires_at = {lease}, updated_at = %(now)s
FROM unnest(ARRAY(SELECT task_id FROM held)) AS h(task_id)
WHERE t.task_id = h.task_id
""".format(lease=_LEASE, **_TABLES)

# -- tasks_complete --
# `complete`: the tasks of `ids` that `worker_id` still holds become COMPLETED; returns the id and
# counters.RETURNING of each (wrapped by `counters.count_finished_sql`, which counts them in the same statement).
# Positional parameters: now, now, ids (an array literal), worker_id.
TASKS_COMPLETE = """
UPDATE {task} SET status = {target}, completed_at = %s, updated_at = %s, lease_expires_at = NULL, last_error = ''
WHERE task_id = ANY(%s::uuid[]) AND status IN ({sources}) AND locked_by = %s
RETURNING task_id, {returning}
""".format(target=COMPLETE.target_sql, sources=COMPLETE.sources_sql, returning=counters.RETURNING, **_TABLES)

# -- task_fail --
# `fail`: after a failed run whose error is permanent or whose attempts are spent, the task becomes FAILED with
# the error, if `worker_id` still holds it.
TASK_FAIL = """
UPDATE {task} SET status = {target}, last_error = %(error)s, error_details = %(details)s, lease_expires_at = NULL,
    completed_at = %(now)s, updated_at = %(now)s
WHERE task_id = %(task_id)s AND status IN ({sources}) AND locked_by = %(worker_id)s
""".format(target=FAIL.target_sql, sources=FAIL.sources_sql, **_TABLES)

# -- task_schedule_retry --
# `schedule_retry`: after a failed run that may be tried again, the task becomes RETRY, due at `run_after` (its
# backoff), with the error, if `worker_id` still holds it.
TASK_SCHEDULE_RETRY = """
UPDATE {task} SET status = {target}, last_error = %(error)s, error_details = %(details)s, lease_expires_at = NULL,
    run_after = %(run_after)s, updated_at = %(now)s
WHERE task_id = %(task_id)s AND status IN ({sources}) AND locked_by = %(worker_id)s
""".format(target=SCHEDULE_RETRY.target_sql, sources=SCHEDULE_RETRY.sources_sql, **_TABLES)

# One rescue: up to `limit` PROCESSING tasks that `{which}` selects, skipping rows a live worker is updating right
# now, become RETRY due at once (`schedule_retry`: a dead worker is not the task's fault) or, when no attempts are
# left, FAILED (`fail`: the attempt counts, so a task that kills its worker still ends FAILED), with the error
# `error`; returns each task's id and new status.
_RESCUE = """
WITH picked AS MATERIALIZED (
    SELECT task_id FROM {task} WHERE status IN ({sources}) AND {which} LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
UPDATE {task} AS t
SET status = CASE WHEN t.attempts >= t.max_attempts THEN {fail} ELSE {retry} END,
    completed_at = CASE WHEN t.attempts >= t.max_attempts THEN %(now)s ELSE t.completed_at END,
    run_after = CASE WHEN t.attempts >= t.max_attempts THEN t.run_after ELSE %(now)s END,
    lease_expires_at = NULL, updated_at = %(now)s, last_error = %(error)s
FROM unnest(ARRAY(SELECT task_id FROM picked)) AS p(task_id)
WHERE t.task_id = p.task_id
RETURNING t.task_id, t.status
"""
assert FAIL.sources == SCHEDULE_RETRY.sources, "a rescue makes either transition from the same states"

# -- tasks_rescue_expired --
# A rescue of the tasks whose lease expired before `now` (their worker died or hung).
TASKS_RESCUE_EXPIRED = _RESCUE.format(
    which="lease_expires_at < %(now)s",
    sources=FAIL.sources_sql,
    fail=FAIL.target_sql,
    retry=SCHEDULE_RETRY.target_sql,
    **_TABLES,
)

# -- tasks_rescue_held --
# A rescue of every task held by one of `holders` (worker ids known to be dead, or a consumer putting back what a
# database error left it holding).
TASKS_RESCUE_HELD = _RESCUE.format(
    which="locked_by = ANY(%(holders)s::text[])",
    sources=FAIL.sources_sql,
    fail=FAIL.target_sql,
    retry=SCHEDULE_RETRY.target_sql,
    **_TABLES,
)

# -- tasks_operator_retry --
# `operator_retry`, set-based: the tasks of `ids` (locked by the caller) get a fresh set of attempts, due at `now`.
TASKS_OPERATOR_RETRY = """
UPDATE {task} SET status = {target}, attempts = 0, run_after = %(now)s, lease_expires_at = NULL, locked_by = '',
    completed_at = NULL, updated_at = %(now)s
WHERE task_id = ANY(%(ids)s::uuid[]) AND status IN ({sources})
""".format(target=OPERATOR_RETRY.target_sql, sources=OPERATOR_RETRY.sources_sql, **_TABLES)

# -- tasks_cancel --
# `cancel`, set-based: the tasks of `ids` (locked by the caller) become CANCELLED.
TASKS_CANCEL = """
UPDATE {task} SET status = {target}, completed_at = %(now)s, updated_at = %(now)s
WHERE task_id = ANY(%(ids)s::uuid[]) AND status IN ({sources})
""".format(target=CANCEL.target_sql, sources=CANCEL.sources_sql, **_TABLES)

# -- queue_samples_upsert --
# This minute's depth and lag of each queue (`queues`, `due`, `running`, `lag`: arrays, one element per queue),
# replacing the minute's earlier sample; rows in queue order, so concurrent samplers lock them in one order.
QUEUE_SAMPLES_UPSERT = """
INSERT INTO {sample} (minute, queue, due, running, lag_seconds)
SELECT %(minute)s, s.queue, s.due, s.running, s.lag_seconds
FROM unnest(%(queues)s::text[], %(due)s::bigint[], %(running)s::bigint[], %(lag)s::float8[])
     AS s(queue, due, running, lag_seconds)
ORDER BY s.queue
ON CONFLICT (minute, queue) DO UPDATE
SET due = EXCLUDED.due, running = EXCLUDED.running, lag_seconds = EXCLUDED.lag_seconds
""".format(**_TABLES)

# Every column of a task row written by TASKS_INSERT_FROM_TABLE, with its value (INSERT ... SELECT applies no
# Django defaults); tests/tracker/test_services.py checks it covers the model's concrete fields.
TASK_FROM_TABLE_VALUES = {
    "task_id": "src.task_id",
    "task_type": "%(task_type)s",
    "queue": "%(queue)s",
    "priority": "%(priority)s",
    "tenant": "%(tenant)s",
    "payload": "src.payload",
    "status": literals([TaskStatus.PENDING]),
    "attempts": "0",
    "max_attempts": "%(max_attempts)s",
    "run_after": "%(now)s",
    "lease_expires_at": "NULL",
    "locked_by": "''",
    "dedupe_key": "NULL",
    "last_error": "''",
    "error_details": "''",
    "created_at": "%(now)s",
    "updated_at": "%(now)s",
    "processing_started_at": "NULL",
    "completed_at": "NULL",
}

# -- tasks_insert_from_table --
# One PENDING task for each row of the table `{source}` (a quoted table name: `tracker.services.
# task_insert_from_table` gives it) whose columns are `task_id uuid` and `payload jsonb`; the other columns from
# the parameters. Columns and values pair by name (TASK_FROM_TABLE_VALUES). `{on_conflict}`: empty, or
# ON CONFLICT DO NOTHING (a task id already there is skipped).
TASKS_INSERT_FROM_TABLE = "INSERT INTO {task} ({columns}) SELECT {values} FROM {{source}} AS src {{on_conflict}}"
TASKS_INSERT_FROM_TABLE = TASKS_INSERT_FROM_TABLE.format(
    columns=", ".join(TASK_FROM_TABLE_VALUES), values=", ".join(TASK_FROM_TABLE_VALUES.values()), **_TABLES
)

# -- tasks_insert_rows --
# One PENDING task per element of the arrays `task_ids`, `payloads` (JSON texts) and `tenants` (ids the caller
# chose, known to be new), the other columns as TASKS_INSERT_FROM_TABLE writes them.
TASKS_INSERT_ROWS = "INSERT INTO {task} ({columns}) SELECT {values} FROM {source}".format(
    columns=", ".join(TASK_FROM_TABLE_VALUES),
    values=", ".join({**TASK_FROM_TABLE_VALUES, "tenant": "src.tenant"}.values()),
    source="unnest(%(task_ids)s::uuid[], %(payloads)s::jsonb[], %(tenants)s::text[]) AS src(task_id, payload, tenant)",
    **_TABLES,
)

# Which statement makes which declared transitions (tests/tracker/test_fsm.py: each statement is written from
# them, and every declared transition is made by a statement here or by its FSM method).
STATEMENT_MOVES = {
    "TASKS_CLAIM": (START,),
    "TASKS_COMPLETE": (COMPLETE,),
    "TASK_FAIL": (FAIL,),
    "TASK_SCHEDULE_RETRY": (SCHEDULE_RETRY,),
    "TASKS_RESCUE_EXPIRED": (FAIL, SCHEDULE_RETRY),
    "TASKS_RESCUE_HELD": (FAIL, SCHEDULE_RETRY),
    "TASKS_OPERATOR_RETRY": (OPERATOR_RETRY,),
    "TASKS_CANCEL": (CANCEL,),
}
