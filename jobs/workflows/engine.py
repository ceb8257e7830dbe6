"""Workflow runs (docs/workflows.md): a run is a `Job` whose steps are `WorkflowStep` rows; each ready step is one
WORKFLOW_STEP tracker task.

Every change of a run's steps happens with the run's `Job` row locked (`SELECT ... FOR UPDATE`), so readiness is
decided once: two consumers finishing the two parents of a join at the same moment are serialised on that lock,
and only the second sees both parents done and enqueues the join. A step runs in three parts: `_begin` (one
transaction: the step RUNNING, an attempt counted), the step function (no transaction open; its own atomic blocks
commit with `ctx.checkpoint`), `_finish` (one transaction: the step's outcome, its tracker task COMPLETED, the
children made ready, the run finalised). A worker killed during the function leaves the step RUNNING with its task
PROCESSING; the tracker's rescue re-delivers the task and `_begin` counts a new attempt."""

import datetime as dt
import functools
import json
import logging
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction
from django.db.models import CharField, DateTimeField, ForeignKey, IntegerField, JSONField, TextField, UUIDField
from django.utils import timezone

from jobs import conf, events
from jobs.errors import JobStateConflict
from jobs.models import (
    ERROR_CHARS,
    ERROR_DETAILS_CHARS,
    STEP_DONE_STATES,
    STEP_TERMINAL_STATES,
    Job,
    JobEventKind,
    JobSignal,
    JobState,
    StepState,
    WorkflowStep,
)
from jobs.runtime import Suspend, to_json
from jobs.workflows import declare, queries
from tracker import audit
from tracker import services as tracker_services
from tracker.bulk import array_literal, execute, json_text, json_text_of, models_from_rows, select_columns
from tracker.errors import PermanentError, RetryableError, TaskStateConflict, is_retryable
from tracker.models import DUE_STATUSES, FINISHED_STATUSES, ProcessTracker, TaskStatus

log = logging.getLogger(__name__)

WORKFLOW_STEP = "WORKFLOW_STEP"
RUNNABLE = (JobState.CREATED, JobState.RUNNING, JobState.WAITING)  # a run whose steps may start


class StepError(RetryableError):
    """A step attempt failed; it is retried with the step's backoff while attempts are left."""

    code = "step_error"


class PermanentStepError(PermanentError):
    """A step failed in a way retrying cannot fix: the step fails at once."""

    code = "step_permanent_error"


class StepTimeout(StepError):
    """The step attempt ran longer than the step's timeout."""

    code = "step_timeout"


class WorkflowVersionMissing(PermanentStepError):
    """The run's workflow version is not declared any more."""

    code = "workflow_version_missing"


def workflow_of(job: Job) -> declare.Workflow | None:
    """The declared version the run started with (None when it is not registered any more)."""
    return declare.get_version(job.job_type, job.workflow_version)


def _missing_version_error(job: Job) -> str:
    known = declare.versions(job.job_type)
    return (
        f"Workflow {job.job_type!r} version {job.workflow_version} is not declared (declared: "
        f"{', '.join(map(str, known)) or 'none'}); keep a version declared while runs of it are unfinished."
    )


_local = threading.local()


@contextmanager
def _event_batch():
    """Collects the events the engine writes in one transaction and writes them at the end of the block with one
    INSERT and one NOTIFY statement (what jobs.events.emit does per event), in the order they were made."""
    outer = getattr(_local, "events", None) is None
    if outer:
        _local.events = []
    try:
        with audit.batch():
            yield
        if outer:
            _flush(_local.events)
    finally:
        if outer:
            _local.events = None


def _batched(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _event_batch():
            return function(*args, **kwargs)

    return wrapper


def _emit(job_id, kind: str, data: dict) -> None:
    buffer = getattr(_local, "events", None)
    if buffer is None:
        events.emit(job_id, kind, data)
    else:
        buffer.append((job_id, kind, data))


def _emit_state(job: Job) -> None:
    _emit(job.pk, JobEventKind.STATE, events.state_data(job))


def _flush(items: list) -> None:
    """The events in one statement: inserted in their order (ids from the sequence, in that order), then for each
    run the two NOTIFYs of jobs.events.emit (the global channel with the run's id, the run's channel with its last
    event id)."""
    if not items:
        return
    execute(
        _FLUSH_SQL,
        [
            timezone.now(),
            array_literal(j for j, _, _ in items),
            array_literal(k for _, k, _ in items),
            array_literal(json_text(d) for _, _, d in items),
            events.EVENTS_CHANNEL,
            events.CHANNEL_PREFIX,
        ],
        rows=False,
    )


_FLUSH_SQL = """
WITH ins AS (
    INSERT INTO jobs_event (job_id, kind, data, created_at)
    SELECT j, k, d, %s::timestamptz FROM unnest(%s::uuid[], %s::varchar(16)[], %s::jsonb[]) AS e(j, k, d)
    RETURNING id, job_id
)
SELECT pg_notify(%s, replace(job_id::text, '-', '')), pg_notify(%s || replace(job_id::text, '-', ''), max(id)::text)
FROM ins GROUP BY job_id
"""


def step_event(step: WorkflowStep, **extra) -> None:
    _emit(
        step.job_id,
        JobEventKind.STEP,
        {"name": step.name, "state": step.state, "attempts": step.attempts, "error": step.error, **extra},
    )


# The step and run columns the engine changes (the batched paths write them with one UPDATE per model; the
# checkpoint is written by the step function's own transactions and never here).
STEP_FIELDS = [
    "state",
    "attempts",
    "task_id",
    "queued_at",
    "started_at",
    "finished_at",
    "next_attempt_at",
    "duration_ms",
    "result",
    "error",
    "error_details",
    "wait_signal",
    "wake_at",
    "wait_seq",
]
JOB_FIELDS = [
    "state",
    "progress",
    "step",
    "heartbeat_at",
    "result",
    "error",
    "error_details",
    "wait_signal",
    "attempts",
    "started_at",
    "finished_at",
    "updated_at",
]


@contextmanager
def _deferred_saves():
    """Inside the block (one transaction, the runs locked), `_save`, `_save_job` and `_enqueue` collect their rows;
    `_flush_steps` writes the tasks (one `task_create_many`, their ids set on the steps) and the steps (one UPDATE)
    collected so far, which the set-based statements that read steps need first; the block's end flushes the steps
    again and writes the runs with one UPDATE. Code inside the block must not read a collected row back unflushed."""
    _local.saves = ({}, {}, [])
    try:
        yield
        _flush_steps()
        jobs = list(_local.saves[1].values())
        now = timezone.now()
        for job in jobs:
            job.updated_at = now
        _update_rows(Job, jobs, JOB_FIELDS)
    finally:
        _local.saves = None


def _flush_steps() -> None:
    """Writes the tasks and steps `_deferred_saves` collected so far (nothing to do outside its block)."""
    saves = getattr(_local, "saves", None)
    if saves is None:
        return
    steps, _, enqueues = saves
    specs = [spec for _, spec in enqueues]
    for (step, _), task in zip(enqueues, tracker_services.task_create_many(specs) if specs else []):
        step.task_id = task.task_id
        steps[step.pk] = step
    _update_rows(WorkflowStep, list(steps.values()), STEP_FIELDS)
    steps.clear()
    enqueues.clear()


def _update_rows(model, objects: list, fields: list[str]) -> None:
    """Writes `fields` of `objects` (rows of `model`) with one `UPDATE ... FROM unnest(...)`, one array parameter
    per column: what `bulk_update` does, without its CASE expression per field and row, and with the same SQL text
    whatever the number of rows (a VALUES list of one placeholder per cell cost psycopg a parse of a new query
    text per batch, and PostgreSQL a plan of it). Each array goes as one text parameter (`array_literal`)."""
    if not objects:
        return
    sql, columns = _update_sql(model, tuple(fields))
    execute(
        sql, [array_literal(cell(getattr(obj, attname)) for obj in objects) for attname, cell in columns], rows=False
    )


# Fields whose Python value is its array element as it is (str() of it is what the column reads).
_PLAIN_FIELDS = (CharField, TextField, IntegerField, DateTimeField, UUIDField, ForeignKey)


@functools.cache
def _update_sql(model, fields: tuple[str, ...]) -> tuple[str, list]:
    """The UPDATE of `_update_rows` and, per column, its attname and how a value becomes an array element (JSON as
    its text, None as NULL)."""
    meta = model._meta
    columns = [meta.pk, *[meta.get_field(name) for name in fields]]
    names = [field.column for field in columns]
    arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in columns)
    sql = (
        f"UPDATE {meta.db_table} AS t SET {', '.join(f'{n} = v.{n}' for n in names[1:])} "
        f"FROM unnest({arrays}) AS v({', '.join(names)}) WHERE t.{names[0]} = v.{names[0]}"
    )
    return sql, [(field.attname, _element_of(field)) for field in columns]


def _element_of(field):
    if isinstance(field, JSONField):
        encode = json_text_of(field)
        return lambda value: None if value is None else encode(value)
    if isinstance(field, _PLAIN_FIELDS):
        return lambda value: value
    return lambda value: field.get_db_prep_save(value, connection)


def _save(step: WorkflowStep, **extra) -> None:
    saves = getattr(_local, "saves", None)
    if saves is None:
        step.save()
    else:
        saves[0][step.pk] = step
    step_event(step, **extra)


def _save_job(job: Job) -> None:
    saves = getattr(_local, "saves", None)
    if saves is None:
        job.save(update_fields=JOB_FIELDS)
    else:
        saves[1][job.pk] = job


def _steps(job: Job) -> list[WorkflowStep]:
    return list(WorkflowStep.objects.filter(job_id=job.pk).order_by("position"))


# --- creating and scheduling ----------------------------------------------------------------------------------


def run_create_steps(*, job: Job, wf: declare.Workflow) -> list[WorkflowStep]:
    """The run's steps, all PENDING, in topological order (called in job_create's transaction)."""
    attempts = {name: wf.step(name).attempts_for(job.params) for name in wf.order}
    return WorkflowStep.objects.bulk_create(
        [
            WorkflowStep(
                job=job,
                name=name,
                position=i,
                depends_on=list(wf.step(name).depends_on),
                max_attempts=attempts[name],
                attempts_limit=attempts[name],
            )
            for i, name in enumerate(wf.order)
        ]
    )


def _enqueue(job: Job, steps: list[WorkflowStep], *, run_after: dict | None = None) -> None:
    """One WORKFLOW_STEP task per step (one INSERT), the step's task_id set (saved by the caller)."""
    if not steps:
        return
    run_after = run_after or {}
    specs = [
        tracker_services.TaskSpec(
            WORKFLOW_STEP, {"job_id": str(job.pk), "step_id": s.pk}, job.merchant_id, None, run_after.get(s.pk)
        )
        for s in steps
    ]
    saves = getattr(_local, "saves", None)
    if saves is not None:  # inserted with the batch's other tasks at the end of _deferred_saves
        saves[2].extend(zip(steps, specs))
        return
    for step, task in zip(steps, tracker_services.task_create_many(specs)):
        step.task_id = task.task_id


def _json(value):
    """A jsonb column of a raw row (Django's psycopg setup reads jsonb as text)."""
    return json.loads(value) if isinstance(value, str) else value


def _step_audit(rows: list[tuple[int, str, str, str]], by) -> None:
    """Audit rows (step id, from state, to state, reason) of steps a set-based statement moved."""
    ct_id = ContentType.objects.get_for_model(WorkflowStep).id
    audit.record_rows([(ct_id, step_id, src, dst, reason) for step_id, src, dst, reason in rows], by=by)


def _advance(jobs: dict[str, Job], by) -> None:
    """Makes ready every PENDING step of the runs `jobs` (rows locked, step changes flushed) whose parents are all
    COMPLETED or SKIPPED, decided in the database (STEPS_QUEUE_READY): QUEUED with a task (one INSERT for all). A
    ready step with a condition is decided here first: false (or raising) SKIPPED, which may make its children
    ready in the next round; true, QUEUED in the next round."""
    runs = {job_id: job for job_id, job in jobs.items() if job.state in RUNNABLE}
    conditional = [
        (job_id, step.name)
        for job_id, job in runs.items()
        if (wf := workflow_of(job)) is not None
        for step in wf.steps
        if step.condition is not None
    ]
    approved: list[int] = []
    while runs:
        rows = execute(
            queries.STEPS_QUEUE_READY,
            {
                "job_ids": array_literal(runs),
                "approved": array_literal(approved),
                "cond_jobs": array_literal(job_id for job_id, _ in conditional),
                "cond_names": array_literal(name for _, name in conditional),
                "now": timezone.now(),
            },
        )
        _queued([row[1:8] for row in rows if row[0] == "queued"], runs, by)
        decide = [row[1:4] + row[8:] for row in rows if row[0] == "decide"]
        if not decide:
            return
        approved += _decide(decide, runs, by)


def _queued(rows: list[tuple], runs: dict[str, Job], by) -> None:
    """The tasks (one INSERT), audit rows and events of the steps STEPS_QUEUE_READY queued."""
    if not rows:
        return
    tracker_services.task_insert_rows(
        task_type=WORKFLOW_STEP,
        rows=[
            (task_id, f'{{"job_id": "{job_id}", "step_id": {step_id}}}', str(runs[str(job_id)].merchant_id or ""))
            for step_id, job_id, _, task_id, _, _, _ in rows
        ],
    )
    _step_audit(
        [(row[0], StepState.PENDING, StepState.QUEUED, "parents done" if row[4] else "root step") for row in rows], by
    )
    for _, job_id, name, _, _, attempts, error in rows:
        _emit(
            job_id, JobEventKind.STEP, {"name": name, "state": StepState.QUEUED, "attempts": attempts, "error": error}
        )


def _decide(rows: list[tuple], runs: dict[str, Job], by) -> list[int]:
    """The conditions of ready steps (id, job id, name, parents' results): the steps whose condition is false or
    raises are SKIPPED (and flushed); returns the ids of the others."""
    approved, skipped = [], {}
    for step_id, job_id, name, results in rows:
        try:
            if workflow_of(runs[str(job_id)]).step(name).condition(_json(results)):
                approved.append(step_id)
                continue
            skipped[step_id] = ""
        except Exception as exc:  # noqa: BLE001  (a condition that raises skips the step, with why)
            skipped[step_id] = f"condition raised {type(exc).__name__}: {exc}"[:ERROR_CHARS]
    for step in WorkflowStep.objects.filter(pk__in=list(skipped)):
        step.error = skipped[step.pk] or step.error
        step.skip(by=by, reason=step.error or "condition false")
        _save(step)
    _flush_steps()
    return approved


def _ensure_tasks(job: Job, steps: list[WorkflowStep]) -> int:
    """Gives every QUEUED/RETRY step (and WAITING step with a timer) whose task is finished or missing a new
    task: after a resume, and the sweeper's repair. Returns how many it created."""
    wanted = [
        s
        for s in steps
        if s.state in (StepState.QUEUED, StepState.RETRY) or (s.state == StepState.WAITING and s.wake_at)
    ]
    if not wanted:
        return 0
    status = dict(
        ProcessTracker.objects.filter(task_id__in=[s.task_id for s in wanted if s.task_id]).values_list(
            "task_id", "status"
        )
    )
    missing = [s for s in wanted if status.get(s.task_id) in (None, *FINISHED_STATUSES)]
    _enqueue(
        job, missing, run_after={s.pk: s.next_attempt_at if s.state == StepState.RETRY else s.wake_at for s in missing}
    )
    for step in missing:
        step.save(update_fields=["task_id"])
    return len(missing)


class RunSummary(NamedTuple):
    """A row of RUNS_SUMMARY (after the run's id)."""

    total: int
    terminal: int
    done: int
    active: int
    busy: list[str]
    waiting: list[str]
    signals: str
    failed: list[str]
    first_error: str | None
    first_details: str | None
    leaves: object


def _refresh(jobs: dict[str, Job], by) -> None:
    """Finalisation of the runs `jobs` (rows locked, step changes flushed): each run's state, progress, current
    steps and result from its steps' RUNS_SUMMARY. The runs are saved and their state (or progress) events
    written when those changed; paused and ended runs are left alone."""
    live = {job_id: job for job_id, job in jobs.items() if job.state in RUNNABLE}
    if live:
        for job_id, *summary in execute(queries.RUNS_SUMMARY, {"job_ids": array_literal(live)}):
            _settle(live[str(job_id)], RunSummary(*summary), by)


def _settle(job: Job, s: RunSummary, by) -> None:
    """COMPLETED when every step is COMPLETED or SKIPPED (the leaves' results its result), RUNNING while a step is
    active, WAITING while steps wait, else FAILED (a step failed, or steps were cancelled)."""
    before = (job.state, job.progress)
    job.progress = int(100 * s.terminal / max(1, s.total))
    job.step = ", ".join(s.busy)[:200]
    job.heartbeat_at = timezone.now()
    job.wait_signal = ""
    if s.done == s.total:
        _to_running(job, by, "steps done")
        job.result = _json(s.leaves)
        job.complete(by=by, reason="every step completed or skipped")
    elif s.active:
        _to_running(job, by, "a step is ready")
    elif s.waiting:
        _to_running(job, by, "a step waits")
        job.wait_signal = ",".join(sorted({n for n in s.signals.split(",") if n}))[:100]
        job.wait(by=by, reason="steps wait: " + ", ".join(s.waiting))
    else:
        _to_running(job, by, "finishing")
        names = ", ".join(s.failed) or "none"
        first = s.first_error if s.failed else "steps were cancelled"
        job.error = f"Steps failed: {names}. {s.failed[0] if s.failed else ''}: {first}"[:ERROR_CHARS]
        job.error_details = s.first_details if s.failed else ""
        job.fail(by=by, reason=f"steps failed: {names}")
    _save_job(job)
    if job.state != before[0]:
        _emit_state(job)
    elif job.progress != before[1]:
        _emit(job.pk, JobEventKind.PROGRESS, {"progress": job.progress, "step": job.step})


def _to_running(job: Job, by, why: str) -> None:
    if job.state == JobState.CREATED:
        job.start(by=by, reason=why)
        job.attempts += 1
    elif job.state == JobState.WAITING:
        job.wake(by=by, reason=why)


@_batched
def run_ensure(*, job: Job, by="system") -> int | None:
    """Schedules a run (called by jobs.services with the job row locked: after create, resume, retry, and by
    the sweeper): ready steps queued, tasks of queued steps present, the run finalised. Returns the number of
    tasks it had to re-create (0 when nothing was missing)."""
    if job.state not in RUNNABLE:
        return None
    steps = _steps(job)
    if workflow_of(job) is None:
        _fail_missing_version(job, steps, by)
        return None
    runs = {str(job.pk): job}
    _advance(runs, by)
    repaired = _ensure_tasks(job, [s for s in steps if s.task_id])  # as loaded before _advance queued any
    _refresh(runs, by)
    return repaired


def _fail_missing_version(job: Job, steps: list[WorkflowStep], by) -> None:
    message = _missing_version_error(job)
    for step in steps:
        if step.state in (StepState.QUEUED, StepState.RETRY):
            step.error = message
            step.fail(by=by, reason=message)
            _save(step)
    _to_running(job, by, "version check")
    job.error = message
    job.fail(by=by, reason=message)
    job.save()
    _emit_state(job)


# --- hooks of the job services (jobs.services), each called with the job row locked ------------------------


@_batched
def run_cancel_steps(*, job: Job, by, reason: str) -> None:
    """Every unfinished step CANCELLED (running ones stop at their next `should_stop()`), their due tasks
    cancelled; the step events come before the run's terminal state event."""
    for step in _steps(job):
        if step.state not in STEP_TERMINAL_STATES:
            step.cancel(by=by, reason=reason)
            _save(step)
    for task_id in ProcessTracker.objects.filter(
        task_type=WORKFLOW_STEP, payload__job_id=str(job.pk), status__in=DUE_STATUSES
    ).values_list("task_id", flat=True):
        try:
            tracker_services.task_cancel(task_id=task_id, by=by, reason=f"run cancelled: {reason}")
        except TaskStateConflict:  # it started meanwhile; it finds its step CANCELLED
            pass


def _reset(steps: list[WorkflowStep], by, reason: str) -> None:
    for step in steps:
        step.reset(by=by, reason=reason)
        _save(step)


@_batched
def run_reset_for_retry(*, job: Job, from_start: bool, by) -> None:
    """Before a FAILED run goes back to CREATED: its FAILED steps (every step with `from_start`) get a fresh set
    of attempts; COMPLETED steps keep their results."""
    steps = _steps(job)
    targets = steps if from_start else [s for s in steps if s.state in (StepState.FAILED, StepState.CANCELLED)]
    _reset(targets, by, "run retried from the start" if from_start else "run retried")


@_batched
def workflow_step_retry(*, job_id, name: str, by=None) -> Job:
    """Runs step `name` of a FAILED run and everything downstream of it again (each with a fresh set of
    attempts), keeping the other steps: the run goes back to CREATED. 409 unless the run is FAILED and the
    step's parents are COMPLETED or SKIPPED; 404 for an unknown step."""
    from jobs import services
    from jobs.errors import JobNotFound

    with transaction.atomic():
        job = services._locked(job_id)
        if job.workflow_version is None:
            raise JobNotFound("This job is not a workflow run.")
        steps = _steps(job)
        by_name = {s.name: s for s in steps}
        if name not in by_name:
            raise JobNotFound(f"Unknown step {name!r}.")
        if job.state != JobState.FAILED:
            raise JobStateConflict(
                f"Run is {job.state}; only FAILED runs can retry a step.", details={"state": job.state}
            )
        step = by_name[name]
        blocked = [p for p in step.depends_on if by_name[p].state not in STEP_DONE_STATES]
        if blocked:
            raise JobStateConflict(
                f"Step {name!r} cannot run: parent(s) {', '.join(blocked)} not completed.", details={"parents": blocked}
            )
        downstream = set(_descendants(steps, name))
        _reset([s for s in steps if s.name in downstream], by, f"retry from step {name!r}")
        job.retry(by=by, reason=f"retry from step {name!r}")
        job.save()
        _emit_state(job)
        run_ensure(job=job, by=by)
    return job


def _descendants(steps: list[WorkflowStep], name: str) -> list[str]:
    out, todo = [], [name]
    while todo:
        current = todo.pop()
        if current not in out:
            out.append(current)
            todo.extend(s.name for s in steps if current in s.depends_on)
    return out


@_batched
def run_signal(*, job: Job, name: str, by) -> None:
    """A signal arrived: steps WAITING for it are queued again (their timer task, if any, cancelled)."""
    woken = []
    for step in _steps(job):
        if step.state == StepState.WAITING and name in step.wait_signal.split(","):
            if step.task_id and ProcessTracker.objects.filter(task_id=step.task_id, status__in=DUE_STATUSES).exists():
                tracker_services.task_cancel(task_id=step.task_id, by=by, reason=f"step woken by signal {name!r}")
            step.requeue(by=by, reason=f"signal {name!r}")
            woken.append(step)
    if not woken:
        return
    if job.state in RUNNABLE:
        _enqueue(job, woken)
    for step in woken:
        _save(step)
    _refresh({str(job.pk): job}, by)


# --- running steps (WORKFLOW_STEP tasks), a claimed batch at a time ------------------------------------------


@dataclass
class StepRow:
    """What an attempt needs of its step (read when the attempt opened)."""

    pk: int
    job_id: object
    name: str
    attempts: int
    checkpoint: dict
    wait_signal: str
    wake_at: dt.datetime | None


class Attempt:
    """One attempt of one step in a claimed batch: opened by `steps_begin_many`, its function called by `call`
    (in a step thread), closed by `steps_finish_many`."""

    def __init__(self, task, job: Job, step: StepRow, parents: dict):
        self.task, self.job, self.step = task, job, step
        self.job_id, self.step_id = str(job.pk), step.pk
        self.parents = parents
        self.ctx: StepContext | None = None
        self.decl: declare.Step | None = None
        self.outcome, self.result, self.exc, self.suspend, self.elapsed = "", None, None, None, 0.0

    def call(self, run_ctx) -> "Attempt":
        """Runs the step function (no transaction open) and keeps its outcome; never raises for the function's
        errors (they are the attempt's outcome)."""
        wf = workflow_of(self.job)
        decl = self.decl = wf.step(self.step.name) if wf is not None else None
        timeout = decl.timeout if decl else None
        self.ctx = StepContext(
            self.job, self.step, self.parents, task_id=self.task.task_id, worker_id=run_ctx.worker_id,
            run_ctx=run_ctx, timeout=timeout,
        )  # fmt: skip
        started = time.monotonic()
        try:
            if decl is None:
                raise WorkflowVersionMissing(_missing_version_error(self.job))
            self.result = decl.function(self.ctx)
            if self.ctx.stop_reason == "timeout" or (timeout and time.monotonic() - started > timeout):
                raise StepTimeout(f"Step {self.step.name!r} ran longer than its timeout of {timeout:g} s.")
            self.outcome = "stopped" if self.ctx.stop_reason else "complete"
        except Suspend as s:
            self.outcome, self.suspend = "suspend", s
        except _Superseded:
            self.outcome = "superseded"
        except Exception as e:  # noqa: BLE001  (any error of the step function is the attempt's outcome)
            log.info("workflow %s step %s attempt %d failed: %s", self.job_id, self.step.name, self.step.attempts, e)
            self.outcome, self.exc = "error", e
        self.elapsed = time.monotonic() - started
        return self


def steps_run_many(*, tasks: list, run_ctx, pool) -> list[tuple[object, BaseException]]:
    """Runs one attempt of the step of each claimed WORKFLOW_STEP task: one transaction opens them all, their
    functions run at the same time on `pool` (a StepPool: one thread each; a lone attempt runs in the caller's
    thread), and as they end, one transaction closes the ones that ended together (after the first to end, those
    ending within GATHER_SECONDS join it). Completes the tasks itself. Returns the (task, error) pairs the caller
    must record as failed tasks (an error of the engine itself, not of a step function)."""
    try:
        attempts = steps_begin_many(tasks=tasks, worker_id=run_ctx.worker_id)
    except Exception as exc:  # noqa: BLE001  (the tasks are recorded as failed and delivered again)
        log.exception("opening %d workflow step attempts failed", len(tasks))
        return [(task, exc) for task in tasks]
    if len(attempts) == 1:
        return _finish_safely([attempts[0].call(run_ctx)], run_ctx.worker_id)
    futures = {pool.submit(attempt.call, run_ctx): attempt for attempt in attempts}
    failures: list = []
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        if pending:
            more, pending = wait(pending, timeout=GATHER_SECONDS)
            done |= more
        ended = []
        for future in done:
            attempt = futures[future]
            if future.exception() is not None:  # a BaseException out of the function (SystemExit ...)
                attempt.outcome, attempt.exc = "error", future.exception()
            ended.append(attempt)
        failures += _finish_safely(ended, run_ctx.worker_id)
    return failures


GATHER_SECONDS = 0.003


def _finish_safely(attempts: list[Attempt], worker_id: str) -> list[tuple[object, BaseException]]:
    """`steps_finish_many`; when that fails, each attempt on its own, so one bad attempt does not sink the others.
    Returns the (task, error) pairs that could not be closed."""
    try:
        steps_finish_many(attempts=attempts, worker_id=worker_id)
        return []
    except Exception as exc:  # noqa: BLE001
        if len(attempts) == 1:
            log.exception("closing workflow step attempt of task %s failed", attempts[0].task.task_id)
            return [(attempts[0].task, exc)]
    failures = []
    for attempt in attempts:
        failures += _finish_safely([attempt], worker_id)
    return failures


def _lock_runs(job_ids) -> dict[str, Job]:
    """The runs' Job rows locked in primary-key order (two batches sharing runs never deadlock), by job id."""
    if not job_ids:
        return {}
    return {
        str(job.pk): job for job in models_from_rows(Job, execute(_LOCK_RUNS_SQL, [array_literal(sorted(job_ids))]))
    }


_LOCK_RUNS_SQL = (
    f"SELECT {select_columns(Job, 'j')} FROM {Job._meta.db_table} AS j WHERE j.{Job._meta.pk.column} = ANY(%s::uuid[])"
    f" ORDER BY j.{Job._meta.pk.column} FOR UPDATE"
)


def steps_begin_many(*, tasks: list, worker_id: str) -> list[Attempt]:
    """Opens the attempts of a claimed batch of WORKFLOW_STEP tasks in one transaction: the runs locked, the QUEUED
    and RETRY steps begun by one statement (STEPS_BEGIN), a WAITING step whose timer is due or a RUNNING step whose
    worker died by `_begin`, the runs that were not RUNNING finalised. A task whose step cannot run now (stale
    task, paused run, timer not due) is completed at once (when still held). Assumes `tasks` are claimed by
    `worker_id`. Returns the attempts to run."""
    with transaction.atomic(), _event_batch(), _deferred_saves():
        jobs = _lock_runs({t.payload["job_id"] for t in tasks})
        runnable = [t for t in tasks if t.payload["job_id"] in jobs and jobs[t.payload["job_id"]].state in RUNNABLE]
        attempts = _begin_queued(runnable, jobs, worker_id)
        begun = {a.task.task_id for a in attempts}
        others = [t for t in runnable if t.task_id not in begun]
        steps = WorkflowStep.objects.in_bulk([t.payload["step_id"] for t in others]) if others else {}
        for task in others:
            step = steps.get(task.payload["step_id"])
            if step is not None and step.task_id == task.task_id and _begin(step, worker_id):
                attempts.append(Attempt(task, jobs[task.payload["job_id"]], _row(step), _parents(step)))
        _flush_steps()
        started = {a.task.task_id for a in attempts}
        tracker_services.task_complete_held(
            task_ids=[t.task_id for t in tasks if t.task_id not in started], worker_id=worker_id
        )
        # runs going RUNNING with a step, and runs whose lost step just failed
        changed = {a.job_id: a.job for a in attempts if a.job.state != JobState.RUNNING}
        changed.update((t.payload["job_id"], jobs[t.payload["job_id"]]) for t in others if t.task_id not in started)
        _refresh(changed, worker_id)
    return attempts


def _begin_queued(tasks: list, jobs: dict[str, Job], worker_id: str) -> list[Attempt]:
    """STEPS_BEGIN for the tasks' steps (their runs locked and runnable); their audit rows and events. Returns the
    attempts of the steps it began (the other tasks' steps were not QUEUED or RETRY under that task)."""
    if not tasks:
        return []
    rows = execute(
        queries.STEPS_BEGIN,
        {
            "step_ids": array_literal(t.payload["step_id"] for t in tasks),
            "task_ids": array_literal(t.task_id for t in tasks),
            "now": timezone.now(),
        },
    )
    by_step = {t.payload["step_id"]: t for t in tasks}
    attempts = []
    for step_id, job_id, name, attempt, _, error, checkpoint, wait_signal, wake_at, parents in rows:
        step = StepRow(step_id, job_id, name, attempt, _json(checkpoint) or {}, wait_signal, wake_at)
        attempts.append(Attempt(by_step[step_id], jobs[str(job_id)], step, _json(parents)))
        _emit(
            job_id, JobEventKind.STEP, {"name": name, "state": StepState.RUNNING, "attempts": attempt, "error": error}
        )
    _step_audit([(row[0], row[4], StepState.RUNNING, f"attempt {row[3]}") for row in rows], worker_id)
    return attempts


def _row(step: WorkflowStep) -> StepRow:
    return StepRow(step.pk, step.job_id, step.name, step.attempts, step.checkpoint, step.wait_signal, step.wake_at)


def _parents(step: WorkflowStep) -> dict:
    """The results of the step's COMPLETED parents, by name."""
    return dict(
        WorkflowStep.objects.filter(
            job_id=step.job_id, name__in=step.depends_on, state=StepState.COMPLETED
        ).values_list("name", "result")
    )


def _begin(step: WorkflowStep, worker_id: str) -> bool:
    """Opens an attempt of a step that STEPS_BEGIN did not begin (its run locked and runnable): a WAITING step
    whose timer is due, or a RUNNING one whose previous worker died (its task was rescued); False when it cannot
    run now, or when it failed for having no attempts left."""
    if step.state == StepState.WAITING:  # its timer
        if not step.wake_at or step.wake_at > timezone.now():
            return False
        step.requeue(by=worker_id, reason="timer")
        step.begin(by=worker_id, reason=f"attempt {step.attempts + 1}")
    elif step.state == StepState.RUNNING:
        if step.attempts >= step.attempts_limit:
            step.error = f"Worker lost during attempt {step.attempts}; no attempts left."
            step.fail(by=worker_id, reason=step.error)
            step.duration_ms = None
            _save(step)
            return False
        audit.record_many(
            WorkflowStep,
            [(step.pk, StepState.RUNNING, StepState.RUNNING)],
            by=worker_id,
            reason=f"attempt {step.attempts} interrupted (worker lost); running again",
        )
        step.started_at = timezone.now()
    else:
        return False
    step.attempts += 1
    _save(step)
    return True


def steps_finish_many(*, attempts: list[Attempt], worker_id: str) -> None:
    """Closes ended attempts in one transaction: the runs locked, the tasks still held by `worker_id` COMPLETED
    (an attempt whose task was rescued meanwhile changes nothing), the completed steps written by one statement
    (STEPS_COMPLETE), the other outcomes applied by `_close`, the children made ready across the runs, the runs
    finalised. An attempt whose step is no longer RUNNING under its task (cancelled, rescued) is "superseded": its
    task completed, its step untouched. Sets each attempt's `outcome`."""
    with transaction.atomic(), _event_batch(), _deferred_saves():
        jobs = _lock_runs({a.job_id for a in attempts})
        held = tracker_services.task_complete_held(task_ids=[a.task.task_id for a in attempts], worker_id=worker_id)
        live = []
        for attempt in attempts:
            if attempt.task.task_id not in held or attempt.job_id not in jobs or attempt.outcome == "superseded":
                attempt.outcome = "superseded"
            else:
                live.append(_with_json_result(attempt))
        _complete_steps([a for a in live if a.outcome == "complete"], worker_id)
        others = [a for a in live if a.outcome != "complete"]
        steps = WorkflowStep.objects.in_bulk([a.step_id for a in others]) if others else {}
        for attempt in others:
            step = steps.get(attempt.step_id)
            if step is None or step.task_id != attempt.task.task_id or step.state != StepState.RUNNING:
                attempt.outcome = "superseded"
            else:
                _close(attempt, jobs[attempt.job_id], step, worker_id)
        _flush_steps()
        _advance({a.job_id: jobs[a.job_id] for a in live if a.outcome == "complete"}, worker_id)
        _refresh({a.job_id: jobs[a.job_id] for a in live if a.outcome != "superseded"}, worker_id)


def _with_json_result(attempt: Attempt) -> Attempt:
    """A completed attempt's result as JSON text (`attempt.result`); a result that is not JSON fails the attempt."""
    if attempt.outcome == "complete":
        try:
            attempt.result = json_text(attempt.result)
        except (TypeError, ValueError) as err:
            attempt.outcome, attempt.exc = "error", PermanentStepError(f"Result is not JSON: {err}")
    return attempt


def _complete_steps(attempts: list[Attempt], worker_id: str) -> None:
    """STEPS_COMPLETE for the completed attempts (their tasks held); their signals consumed, their audit rows and
    events. An attempt whose step it did not complete is superseded."""
    if not attempts:
        return
    rows = execute(
        queries.STEPS_COMPLETE,
        {
            "step_ids": array_literal(a.step_id for a in attempts),
            "task_ids": array_literal(a.task.task_id for a in attempts),
            "results": array_literal(a.result for a in attempts),
            "durations": array_literal(int(a.elapsed * 1000) for a in attempts),
            "now": timezone.now(),
        },
    )
    completed = {row[0] for row in rows}
    for attempt in attempts:
        if attempt.step_id in completed:
            attempt.ctx.consume_signals()
        else:
            attempt.outcome = "superseded"
    for _, job_id, name, attempt in rows:
        _emit(job_id, JobEventKind.STEP, {"name": name, "state": StepState.COMPLETED, "attempts": attempt, "error": ""})
    _step_audit(
        [(row[0], StepState.RUNNING, StepState.COMPLETED, f"attempt {row[3]} completed") for row in rows], worker_id
    )


def _close(attempt: Attempt, job: Job, step: WorkflowStep, worker_id: str) -> None:
    """Applies an ended attempt's outcome other than "complete" to its step (job row locked): QUEUED again
    (stopped), WAITING (suspended), RETRY with backoff or FAILED (error). Tasks for what runs again are enqueued."""
    attempt.ctx.consume_signals()
    step.duration_ms = int(attempt.elapsed * 1000)
    outcome, exc, suspend = attempt.outcome, attempt.exc, attempt.suspend
    if outcome == "suspend" and suspend.signal and _signal_waiting(job, suspend.signal):
        outcome = "stopped"  # the signal arrived after the step looked: run again at once
    if outcome == "stopped":
        step.attempts -= 1  # not a failed attempt
        step.requeue(by=worker_id, reason=f"stopped ({attempt.ctx.stop_reason or 'signal arrived'})")
        if job.state in RUNNABLE:
            _enqueue(job, [step])
    elif outcome == "suspend":
        _suspend(job, step, suspend, worker_id)
    else:
        _fail_attempt(job, step, exc, attempt.decl, worker_id)
    attempt.outcome = outcome
    _save(step)


def _signal_waiting(job: Job, signal: str) -> bool:
    return JobSignal.objects.filter(job_id=job.pk, name__in=signal.split(","), consumed_at__isnull=True).exists()


def _suspend(job: Job, step: WorkflowStep, suspend: Suspend, worker_id: str) -> None:
    step.wait_seq += 1
    step.wait_signal = suspend.signal[:200]
    step.wake_at = suspend.wake_at
    why = f"waiting for signal {suspend.signal!r}" if suspend.signal else "sleeping"
    step.suspend(by=worker_id, reason=why + (f" until {suspend.wake_at.isoformat()}" if suspend.wake_at else ""))
    if suspend.wake_at:
        _enqueue(job, [step], run_after={step.pk: suspend.wake_at})


def _fail_attempt(job: Job, step: WorkflowStep, exc: BaseException, decl, worker_id: str) -> None:
    """A failed attempt: RETRY after the step's backoff while attempts are left and the error is retryable, else
    FAILED."""
    step.error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
    step.error_details = "".join(traceback.format_exception(exc))[-ERROR_DETAILS_CHARS:]
    if is_retryable(exc) and step.attempts < step.attempts_limit:
        delay = decl.backoff_seconds(step.attempts) if decl else 1.0
        step.next_attempt_at = timezone.now() + dt.timedelta(seconds=delay)
        step.retry_later(by=worker_id, reason=f"attempt {step.attempts} failed, retry in {delay:g} s: {step.error}")
        _enqueue(job, [step], run_after={step.pk: step.next_attempt_at})
    else:
        why = "no attempts left" if is_retryable(exc) else "permanent error"
        step.fail(by=worker_id, reason=f"{why}: {step.error}")


class _Superseded(Exception):
    """Internal: this attempt no longer owns its step (cancelled, or its task was rescued)."""


class StepContext:
    """What a step function gets: `parents` (results by parent name, COMPLETED parents only), `params` (the
    run's), `progress`/`log`, `should_stop()`, `checkpoint`/`checkpoint_data`, `wait_for_signal`/`wait_for_any`/
    `sleep_until` (the step waits without holding a worker, and its function is entered again from the start
    with its checkpoint when the signal or the time comes)."""

    def __init__(
        self, job: Job, step: WorkflowStep, parents: dict, *, task_id, worker_id: str, run_ctx, timeout: float | None
    ):
        self.job_id, self.step_id, self.name = job.pk, step.pk, step.name
        self.params, self.merchant_id, self.owner_id = job.params, job.merchant_id, job.owner_id
        self.parents = parents
        self.attempt = step.attempts
        self.checkpoint_data: dict = dict(step.checkpoint or {})
        self._task_id, self._worker_id, self._run_ctx = task_id, worker_id, run_ctx
        self._wait_signal, self._wake_at = step.wait_signal, step.wake_at
        self._deadline = time.monotonic() + timeout if timeout else None
        self._stop_every = conf.get("STOP_CHECK_SECONDS")
        self._last_check = time.monotonic()
        self._received: list[int] = []
        self.stop_reason = ""

    def progress(self, pct, message: str = "") -> None:
        """Reports the step's own progress (a `step` event with `progress`)."""
        events.emit(
            self.job_id,
            JobEventKind.STEP,
            {
                "name": self.name,
                "state": StepState.RUNNING,
                "attempts": self.attempt,
                "error": "",
                "progress": max(0, min(100, int(pct))),
                "message": str(message),
            },
        )

    def log(self, message: str, **data) -> None:
        events.emit(self.job_id, JobEventKind.LOG, {"message": f"[{self.name}] {message}", "step": self.name, **data})

    def heartbeat(self) -> None:
        if self._run_ctx is not None:
            self._run_ctx.heartbeat()

    def should_stop(self) -> bool:
        """True when the run was paused or cancelled, the step was cancelled, or its timeout passed."""
        if self.stop_reason:
            return True
        now = time.monotonic()
        if self._deadline is not None and now >= self._deadline:
            self.stop_reason = "timeout"
            return True
        if now - self._last_check >= self._stop_every:
            self._last_check = now
            job_state = Job.objects.filter(pk=self.job_id).values_list("state", flat=True).first()
            step = WorkflowStep.objects.filter(pk=self.step_id).values_list("state", "task_id").first()
            if (
                job_state not in (JobState.RUNNING, JobState.CREATED)
                or step is None
                or step != (StepState.RUNNING, self._task_id)
            ):
                self.stop_reason = job_state if job_state != JobState.RUNNING else "step cancelled"
                return True
        return False

    def checkpoint(self, data: dict) -> None:
        """Saves `data` as the step's checkpoint in the current transaction (call it last in the atomic block
        whose work it describes): after a crash the next attempt starts with `checkpoint_data`. Raises (rolling
        the block back) when this attempt no longer owns the step."""
        data = to_json(data)
        with transaction.atomic():
            step = (
                WorkflowStep.objects.select_for_update().filter(pk=self.step_id).values_list("state", "task_id").first()
            )
            if (
                step != (StepState.RUNNING, self._task_id)
                or not ProcessTracker.objects.filter(
                    task_id=self._task_id, status=TaskStatus.PROCESSING, locked_by=self._worker_id
                ).exists()
            ):
                raise _Superseded()
            WorkflowStep.objects.filter(pk=self.step_id).update(checkpoint=data, wait_signal="", wake_at=None)
            self.consume_signals()
        self.checkpoint_data = data
        self._wait_signal, self._wake_at = "", None

    def consume_signals(self) -> None:
        """Marks the signals this attempt received as consumed (in the checkpoint's or the finish's
        transaction, so a crash before either delivers them again)."""
        if self._received:
            JobSignal.objects.filter(pk__in=self._received, consumed_at__isnull=True).update(consumed_at=timezone.now())
            self._received = []

    def wait_for_signal(self, name: str, timeout: float | dt.timedelta | None = None) -> dict | None:
        got = self.wait_for_any(name, timeout=timeout)
        return None if got is None else got[1]

    def wait_for_any(self, *names: str, timeout: float | dt.timedelta | None = None) -> tuple[str, dict] | None:
        """(name, payload) of the oldest stored signal of `names` not yet consumed; None when an earlier wait
        for them timed out; otherwise suspends the step (WAITING, worker released)."""
        names = [str(n) for n in names]
        signal = (
            JobSignal.objects.filter(job_id=self.job_id, name__in=names, consumed_at__isnull=True)
            .exclude(pk__in=self._received)
            .order_by("id")
            .first()
        )
        if signal is not None:
            self._received.append(signal.pk)
            self.log(f"signal {signal.name!r} received", signal=signal.name, payload=signal.payload)
            return signal.name, signal.payload if isinstance(signal.payload, dict) else {"value": signal.payload}
        now = timezone.now()
        if self._wait_signal == ",".join(names) and self._wake_at and self._wake_at <= now:
            return None
        if isinstance(timeout, (int, float)):
            timeout = dt.timedelta(seconds=timeout)
        raise Suspend(signal=",".join(names), wake_at=now + timeout if timeout is not None else None)

    def sleep_until(self, when: dt.datetime) -> None:
        """Returns at once when `when` has passed; otherwise suspends the step until then (worker released)."""
        if timezone.now() >= when:
            return
        raise Suspend(wake_at=when)
