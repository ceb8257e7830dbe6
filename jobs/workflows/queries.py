"""The workflow engine's set-based SQL (docs/workflows.md, "Where a step's time goes"): one named and commented
statement each, run by `jobs.workflows.engine` with the runs' Job rows locked.

A statement that changes a step's state is written from the transition `WorkflowStep` declares for it
(`tracker.fsm.moves`): its `state IN (...)` from the transition's sources, its `SET state = ...` from its target;
`STATEMENT_MOVES` says which statement makes which transition (tests/jobs/test_workflow_queries.py checks both ways).
The statements return what the engine needs for the audit rows and the events it writes next (the tracker's audit
and the run's event log keep their own write paths). Arrays go as one text parameter each
(`tracker.bulk.array_literal`), so a statement's text is the same for every batch size."""

from jobs.models import STEP_ACTIVE_STATES, STEP_DONE_STATES, STEP_TERMINAL_STATES, StepState, WorkflowStep
from tracker.fsm import literals, moves

MOVES = moves(WorkflowStep, "state")
QUEUE, BEGIN, COMPLETE = MOVES["queue"], MOVES["begin"], MOVES["complete"]

_NAMES = {
    "step": WorkflowStep._meta.db_table,
    "done": literals(STEP_DONE_STATES),
    "terminal": literals(STEP_TERMINAL_STATES),
    "active": literals(STEP_ACTIVE_STATES),
    "completed": literals([StepState.COMPLETED]),
    "waiting": literals([StepState.WAITING]),
    "failed": literals([StepState.FAILED]),
    "busy": literals([StepState.RUNNING, StepState.WAITING]),
}

# The results of step `{row}`'s COMPLETED parents as one JSON object by parent name ('{}' when it has none).
_PARENT_RESULTS = """
    (SELECT coalesce(jsonb_object_agg(p.name, p.result), '{{}}'::jsonb) FROM {step} AS p
     WHERE p.job_id = {row}.job_id AND p.state = {completed}
       AND p.name IN (SELECT jsonb_array_elements_text({row}.depends_on)))"""

# -- steps_begin --
# `begin`: the steps of `step_ids` whose current task is the paired id of `task_ids` and that are QUEUED or RETRY
# become RUNNING, attempts + 1, started at `now`; returns each begun step's id, job id, name, attempts, previous
# state, error (of its previous attempt), checkpoint, wait_signal and wake_at, and its parents' results. The
# self-join reads the previous state (the run's lock keeps it from changing under the statement).
STEPS_BEGIN = """
WITH begun AS (
    UPDATE {step} AS s SET state = {target}, attempts = s.attempts + 1, started_at = %(now)s, next_attempt_at = NULL
    FROM unnest(%(step_ids)s::bigint[], %(task_ids)s::uuid[]) AS v(step_id, task_id), {step} AS o
    WHERE s.id = v.step_id AND s.task_id = v.task_id AND s.state IN ({sources}) AND o.id = s.id
    RETURNING s.id, s.job_id, s.name, s.attempts, o.state AS previous, s.error, s.checkpoint, s.wait_signal,
        s.wake_at, s.depends_on
)
SELECT b.id, b.job_id, b.name, b.attempts, b.previous, b.error, b.checkpoint, b.wait_signal, b.wake_at,
    {parents}
FROM begun AS b
""".format(
    target=BEGIN.target_sql, sources=BEGIN.sources_sql, parents=_PARENT_RESULTS.format(row="b", **_NAMES), **_NAMES
)

# -- steps_complete --
# `complete`: the steps of `step_ids` that are RUNNING under the paired task of `task_ids` become COMPLETED at `now`
# with the paired result (JSON text) and duration, their error cleared; returns each completed step's id, job id,
# name and attempts. A step not returned was superseded (cancelled, or its task rescued and begun again).
STEPS_COMPLETE = """
UPDATE {step} AS s SET state = {target}, result = v.result, duration_ms = v.duration_ms, finished_at = %(now)s,
    error = '', error_details = ''
FROM unnest(%(step_ids)s::bigint[], %(task_ids)s::uuid[], %(results)s::jsonb[], %(durations)s::int[])
    AS v(step_id, task_id, result, duration_ms)
WHERE s.id = v.step_id AND s.task_id = v.task_id AND s.state IN ({sources})
RETURNING s.id, s.job_id, s.name, s.attempts
""".format(target=COMPLETE.target_sql, sources=COMPLETE.sources_sql, **_NAMES)

# -- steps_queue_ready --
# Readiness (`queue`): the PENDING steps of the runs `job_ids` whose parents are all COMPLETED or SKIPPED. Those
# without a condition, and the conditional ones of `approved` (their condition held), become QUEUED at `now` with a
# new task id; the other ready ones with a condition (`cond_jobs`/`cond_names`: pairs of run id and step name) are
# left PENDING for the engine to decide. Returns ('queued', id, job id, name, task id, number of parents, attempts,
# error, NULL) per queued step and ('decide', id, job id, name, NULL, NULL, NULL, NULL, parents' results) per step
# to decide.
STEPS_QUEUE_READY = """
WITH ready AS MATERIALIZED (
    SELECT c.id, c.job_id, c.name, c.depends_on,
        (c.id <> ALL(%(approved)s::bigint[]) AND EXISTS (
            SELECT 1 FROM unnest(%(cond_jobs)s::uuid[], %(cond_names)s::text[]) AS k(job_id, name)
            WHERE k.job_id = c.job_id AND k.name = c.name)) AS conditional
    FROM {step} AS c
    WHERE c.job_id = ANY(%(job_ids)s::uuid[]) AND c.state IN ({sources})
      AND NOT EXISTS (
        SELECT 1 FROM {step} AS p
        WHERE p.job_id = c.job_id AND p.name IN (SELECT jsonb_array_elements_text(c.depends_on))
          AND p.state NOT IN ({done}))
),
queued AS (
    UPDATE {step} AS s SET state = {target}, queued_at = %(now)s, task_id = gen_random_uuid()
    FROM ready AS r WHERE s.id = r.id AND NOT r.conditional
    RETURNING s.id, s.job_id, s.name, s.task_id, jsonb_array_length(s.depends_on) AS parents, s.attempts, s.error
)
SELECT 'queued', q.id, q.job_id, q.name, q.task_id, q.parents, q.attempts, q.error, NULL FROM queued AS q
UNION ALL
SELECT 'decide', r.id, r.job_id, r.name, NULL, NULL, NULL, NULL, {parents}
FROM ready AS r WHERE r.conditional
""".format(
    target=QUEUE.target_sql, sources=QUEUE.sources_sql, parents=_PARENT_RESULTS.format(row="r", **_NAMES), **_NAMES
)

# -- runs_summary --
# What finalisation needs of each run of `job_ids`, from its steps: their number, how many are terminal, done
# (COMPLETED or SKIPPED) and active (QUEUED, RUNNING, RETRY); the names (arrays, in order) of the running or
# waiting ones and of the waiting ones; the signals the waiting ones wait for (comma-separated); the failed ones'
# names and the first one's error and traceback; and, once every step is done, the leaves' results (a leaf: no
# step depends on it).
RUNS_SUMMARY = """
SELECT s.job_id, count(*), count(*) FILTER (WHERE s.state IN ({terminal})),
    count(*) FILTER (WHERE s.state IN ({done})), count(*) FILTER (WHERE s.state IN ({active})),
    coalesce(array_agg(s.name ORDER BY s.position) FILTER (WHERE s.state IN ({busy})), '{{}}'),
    coalesce(array_agg(s.name ORDER BY s.position) FILTER (WHERE s.state = {waiting}), '{{}}'),
    coalesce(string_agg(s.wait_signal, ',') FILTER (WHERE s.state = {waiting}), ''),
    coalesce(array_agg(s.name ORDER BY s.position) FILTER (WHERE s.state = {failed}), '{{}}'),
    (array_agg(s.error ORDER BY s.position) FILTER (WHERE s.state = {failed}))[1],
    (array_agg(s.error_details ORDER BY s.position) FILTER (WHERE s.state = {failed}))[1],
    CASE WHEN count(*) FILTER (WHERE s.state IN ({done})) = count(*) THEN (
        SELECT coalesce(jsonb_object_agg(l.name, l.result), '{{}}'::jsonb) FROM {step} AS l
        WHERE l.job_id = s.job_id
          AND NOT EXISTS (SELECT 1 FROM {step} AS o WHERE o.job_id = l.job_id AND o.depends_on ? l.name))
    END
FROM {step} AS s
WHERE s.job_id = ANY(%(job_ids)s::uuid[])
GROUP BY s.job_id
""".format(**_NAMES)

# Which statement makes which declared transitions (tests/jobs/test_workflow_queries.py).
STATEMENT_MOVES = {"STEPS_BEGIN": (BEGIN,), "STEPS_COMPLETE": (COMPLETE,), "STEPS_QUEUE_READY": (QUEUE,)}
