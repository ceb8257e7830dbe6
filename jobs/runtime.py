"""The job runtime: `JobContext` (what a handler gets) and the slice runner (what a JOB_RUN task does).

A job runs as a sequence of *slices*. Each slice is one tracker task of type JOB_RUN; it calls the job type's
handler once, with a time budget (settings JOBS["SLICE_SECONDS"], env JOBS_SLICE_SECONDS, default 20 s).

Handler contract (re-entrant):
- Resume from `ctx.checkpoint_data` (`{}` at first). Anything not covered by a checkpoint may run again.
- Do the work in `transaction.atomic()` blocks and call `ctx.checkpoint(data)` as the last statement of each
  block: the checkpoint is written in the same transaction as the work before it, so after a crash the job
  resumes exactly after the last committed block. (Each slice runs on its own database connection, so each
  block commits on its own.)
- Call `ctx.should_stop()` between units of work and return (with any value) when it is True: the job was
  paused or cancelled, or the slice's budget is spent, in which case the runtime enqueues the next slice. The
  return value of a slice in which `should_stop()` answered True is ignored.
- Returning (without having been told to stop) completes the job; the value (JSON-serialisable) becomes its
  `result`. Raising fails it, with the error and traceback kept; an operator may retry it (from its checkpoint).
- `ctx.wait_for_signal(name, timeout=None)` returns a stored signal's payload (a dict), or None when its
  timeout elapsed; otherwise it suspends the job (WAITING, no worker held) and the handler is entered again
  from its last checkpoint when the signal or the timer arrives. `ctx.sleep_until(when)` does the same with a
  durable timer (pass an absolute time kept in the checkpoint). Call both outside atomic blocks.
- A signal counts as received once a checkpoint is written after it (or the job completes); otherwise the
  next slice receives it again."""

import datetime as dt
import json
import logging
import threading
import time
import traceback

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, connections, transaction
from django.db.models import F
from django.utils import timezone

from jobs import conf, events, registry
from jobs.errors import JobRunSuperseded
from jobs.models import ERROR_CHARS, ERROR_DETAILS_CHARS, Job, JobEventKind, JobSignal, JobState
from tracker.models import ProcessTracker, TaskStatus
from tracker.registry import RunContext

log = logging.getLogger(__name__)

JOB_RUN = "JOB_RUN"
JOB_WAKE = "JOB_WAKE"


def run_dedupe_key(job_id) -> str:
    return f"job:{job_id}"


def wake_dedupe_key(job_id, wait_seq: int) -> str:
    return f"job:{job_id}:wake:{wait_seq}"


def to_json(value):
    """JSON-ready copy (Decimal, dates, UUIDs as strings)."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


class Suspend(Exception):
    """Internal: the handler waits for a signal and/or a timer. The runtime moves the job to WAITING."""

    def __init__(self, signal: str = "", wake_at: dt.datetime | None = None):
        super().__init__(f"waiting for {signal or 'timer'}")
        self.signal, self.wake_at = signal, wake_at


class JobContext:
    """What a job handler gets. One per slice; not shared between threads."""

    def __init__(
        self,
        job: Job,
        *,
        task_id=None,
        worker_id: str = "",
        run_ctx: RunContext | None = None,
        deadline: float | None = None,
    ):
        self.job_id = job.pk
        self.job_type = job.job_type
        self.params = job.params
        self.merchant_id = job.merchant_id
        self.owner_id = job.owner_id
        self.schema_version = job.schema_version
        self.attempt = job.attempts
        self.checkpoint_data: dict = dict(job.checkpoint or {})
        self._checkpoint_seq = job.checkpoint_seq
        self._wait_signal, self._wake_at = job.wait_signal, job.wake_at
        self._task_id, self._worker_id, self._run_ctx = task_id, worker_id, run_ctx
        self._deadline = deadline if deadline is not None else time.monotonic() + conf.get("SLICE_SECONDS")
        self._stop_check_every = conf.get("STOP_CHECK_SECONDS")
        self._last_stop_check = time.monotonic()
        self._last_heartbeat = 0.0
        self._last_progress: tuple | None = (job.progress, job.step)
        self._last_progress_at = 0.0
        self.stop_reason = ""  # "budget", or the state that stopped the job (PAUSED, CANCELLED)

    # --- progress and logs ---------------------------------------------------------------------------
    def progress(self, pct, step: str | None = None) -> None:
        """Sets the job's progress (0-100) and, optionally, its current step; writes a progress event.
        Repeated identical values are written at most once per JOBS["PROGRESS_EVERY_SECONDS"]."""
        pct = max(0, min(100, int(pct)))
        step = self._last_progress[1] if step is None else str(step)[:200]
        now = time.monotonic()
        if (pct, step) == self._last_progress and now - self._last_progress_at < conf.get("PROGRESS_EVERY_SECONDS"):
            return
        self._last_progress, self._last_progress_at = (pct, step), now
        with transaction.atomic():
            Job.objects.filter(pk=self.job_id).update(progress=pct, step=step, heartbeat_at=timezone.now())
            events.emit(self.job_id, JobEventKind.PROGRESS, {"progress": pct, "step": step})

    def log(self, message: str, **data) -> None:
        """Appends a line to the job's event log (shown live in the admin and the event stream)."""
        log.debug("job %s: %s", self.job_id, message)
        events.emit(self.job_id, JobEventKind.LOG, {"message": str(message), **data})

    # --- durability ----------------------------------------------------------------------------------
    def checkpoint(self, data: dict) -> None:
        """Saves `data` as the job's checkpoint, in the current transaction (call it last inside the
        `transaction.atomic()` block that did the work it describes). Raises JobRunSuperseded (rolling the
        block back) when this slice no longer owns the job."""
        data = to_json(data)
        with transaction.atomic():
            self._fence()
            Job.objects.filter(pk=self.job_id).update(
                checkpoint=data,
                checkpoint_seq=F("checkpoint_seq") + 1,
                heartbeat_at=timezone.now(),
                wait_signal="",
                wake_at=None,
            )
        self.checkpoint_data = data
        self._checkpoint_seq += 1
        self._wait_signal, self._wake_at = "", None

    def _fence(self) -> None:
        """Locks the job row and checks that this slice's tracker task is still held by this worker."""
        run_task_id = Job.objects.select_for_update().filter(pk=self.job_id).values_list("run_task_id", flat=True)
        run_task_id = run_task_id.first()
        if self._task_id is None:
            return
        if (
            run_task_id != self._task_id
            or not ProcessTracker.objects.filter(
                task_id=self._task_id, status=TaskStatus.PROCESSING, locked_by=self._worker_id
            ).exists()
        ):
            raise JobRunSuperseded()

    def heartbeat(self) -> None:
        """Renews the tracker lease of this slice's task and the job's heartbeat_at (at most once a second).
        The worker's heartbeat thread renews leases too; call this in long steps without checkpoints."""
        now = time.monotonic()
        if now - self._last_heartbeat < 1.0:
            return
        self._last_heartbeat = now
        if self._run_ctx is not None and not connection.in_atomic_block:
            self._run_ctx.heartbeat()
        Job.objects.filter(pk=self.job_id).update(heartbeat_at=timezone.now())

    # --- stopping ------------------------------------------------------------------------------------
    def should_stop(self) -> bool:
        """True when the job was paused or cancelled (re-read from the database at most every
        JOBS["STOP_CHECK_SECONDS"]) or the slice's time budget is spent. Once True, stays True."""
        if self.stop_reason:
            return True
        now = time.monotonic()
        if now >= self._deadline:
            self.stop_reason = "budget"
            return True
        if now - self._last_stop_check >= self._stop_check_every:
            self._last_stop_check = now
            state = Job.objects.filter(pk=self.job_id).values_list("state", flat=True).first()
            if state != JobState.RUNNING:
                self.stop_reason = state or "deleted"
                return True
        return False

    @property
    def seconds_left(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    # --- signals and timers --------------------------------------------------------------------------
    def wait_for_signal(self, name: str, timeout: float | dt.timedelta | None = None) -> dict | None:
        """The payload (a dict) of the oldest stored, unconsumed signal `name`, consumed now; None when an
        earlier wait for it timed out; otherwise suspends the job (WAITING, no worker held) until the signal
        or the timeout arrives, and the handler is entered again from its last checkpoint."""
        got = self.wait_for_any(name, timeout=timeout)
        return None if got is None else got[1]

    def wait_for_any(self, *names: str, timeout: float | dt.timedelta | None = None) -> tuple[str, dict] | None:
        """Like `wait_for_signal` for several names: (name, payload) of the oldest matching signal, or None
        after a timeout."""
        names = [str(n) for n in names]
        with transaction.atomic():
            signal = (
                JobSignal.objects.select_for_update(skip_locked=True)
                .filter(job_id=self.job_id, name__in=names, consumed_at__isnull=True)
                .order_by("id")
                .first()
            )
            if signal is not None:
                JobSignal.objects.filter(pk=signal.pk).update(
                    consumed_at=timezone.now(), consumed_seq=self._checkpoint_seq
                )
                self.log(f"signal {signal.name!r} received", signal=signal.name, payload=signal.payload)
                payload = signal.payload if isinstance(signal.payload, dict) else {"value": signal.payload}
                return signal.name, payload
        now = timezone.now()
        if self._wait_signal == ",".join(names) and self._wake_at and self._wake_at <= now:
            return None
        if isinstance(timeout, (int, float)):
            timeout = dt.timedelta(seconds=timeout)
        raise Suspend(signal=",".join(names), wake_at=now + timeout if timeout is not None else None)

    def sleep_until(self, when: dt.datetime) -> None:
        """Returns at once if `when` has passed; otherwise suspends the job (no worker held) until then."""
        if timezone.now() >= when:
            return
        raise Suspend(wake_at=when)


# --- the slice runner ------------------------------------------------------------------------------------


def _start(job_id, task, worker_id: str) -> Job | None:
    """Opens a slice: locks the job, checks it is runnable by this task, CREATED -> RUNNING. Returns the job,
    or None when there is nothing to run (stale task, paused, waiting, finished)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return None
        if task is not None and job.run_task_id and job.run_task_id != task.task_id:
            return None
        recovered = started = False
        if job.state == JobState.CREATED:
            started = True
            job.start(by=worker_id, reason="started" if not job.attempts else "restarted after retry")
            job.attempts += 1
        elif job.state == JobState.RUNNING:
            recovered = task is not None and task.attempts > 1
            if recovered:
                job.attempts += 1
        else:
            return None
        refusal = _upgrade_checkpoint(job)
        if refusal:
            job.error = refusal
            job.fail(by=worker_id, reason=refusal)
            job.save()
            events.emit_state(job)
            return None
        # Signals received after the last durable checkpoint are delivered again (the handler restarts there).
        JobSignal.objects.filter(job=job, consumed_at__isnull=False, consumed_seq__gte=job.checkpoint_seq).update(
            consumed_at=None, consumed_seq=None
        )
        job.slices += 1
        job.heartbeat_at = timezone.now()
        job.save()
        if recovered:
            events.emit(
                job.pk,
                JobEventKind.LOG,
                {
                    "message": f"resumed from the last checkpoint after an interrupted run (attempt {job.attempts})",
                    "checkpoint": job.checkpoint,
                },
            )
        if started:
            events.emit_state(job)
    return job


def _upgrade_checkpoint(job: Job) -> str:
    """Brings a checkpoint written by an older schema_version of the job type up to date with the type's
    `upgrade(checkpoint, from_version)` (in place). Returns why the job cannot run ("" when it can): a newer
    schema than the code knows, or an older non-empty checkpoint without an upgrade."""
    try:
        jt = registry.get(job.job_type)
    except Exception as exc:
        return str(exc)
    if job.schema_version == jt.schema_version:
        return ""
    if job.schema_version > jt.schema_version:
        return (
            f"Checkpoint schema version {job.schema_version} is newer than job type {job.job_type!r} knows "
            f"({jt.schema_version}); run it with the code that wrote it."
        )
    if job.checkpoint and jt.upgrade is None:
        return (
            f"Checkpoint schema version {job.schema_version} of job type {job.job_type!r} cannot be read by "
            f"version {jt.schema_version} (the type declares no upgrade); retry it from the start."
        )
    if job.checkpoint:
        job.checkpoint = to_json(jt.upgrade(dict(job.checkpoint), job.schema_version))
        events.emit(
            job.pk,
            JobEventKind.LOG,
            {"message": f"checkpoint upgraded from schema version {job.schema_version} to {jt.schema_version}"},
        )
    job.schema_version = jt.schema_version
    return ""


def _slice_superseded(job: Job, task, worker_id: str) -> bool:
    """Whether this slice's task is no longer the job's run task or no longer held by this worker."""
    return task is not None and (
        job.run_task_id != task.task_id
        or not ProcessTracker.objects.filter(
            task_id=task.task_id, status=TaskStatus.PROCESSING, locked_by=worker_id
        ).exists()
    )


def _signal_already_sent(job: Job, suspend: Suspend) -> bool:
    """Whether a signal the slice waits for arrived after the handler looked (job_signal saw RUNNING and did not
    wake it): the job then runs again at once instead of waiting for it."""
    return (
        bool(suspend.signal)
        and JobSignal.objects.filter(
            job_id=job.pk, name__in=suspend.signal.split(","), consumed_at__isnull=True
        ).exists()
    )


def _job_fail(job: Job, exc: BaseException, worker_id: str) -> None:
    job.error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
    job.error_details = "".join(traceback.format_exception(exc))[-ERROR_DETAILS_CHARS:]
    job.fail(by=worker_id, reason=job.error)


def _job_suspend(job: Job, suspend: Suspend, worker_id: str) -> None:
    """Moves the job to WAITING for `suspend`'s signal and/or its wake-up time (a JOB_WAKE timer task)."""
    from tracker import services as tracker_services

    job.wait_seq += 1
    job.wait_signal = suspend.signal
    job.wake_at = suspend.wake_at
    why = f"waiting for signal {suspend.signal!r}" if suspend.signal else "sleeping"
    if suspend.wake_at:
        why += f" until {suspend.wake_at.isoformat()}"
    job.wait(by=worker_id, reason=why)
    if suspend.wake_at:
        tracker_services.task_create(
            task_type=JOB_WAKE,
            payload={"job_id": str(job.pk), "wait_seq": job.wait_seq},
            tenant=job.merchant_id,
            dedupe_key=wake_dedupe_key(job.pk, job.wait_seq),
            run_after=suspend.wake_at,
        )


def _finish(
    job_id,
    task,
    worker_id: str,
    outcome: str,
    *,
    result=None,
    exc: BaseException | None = None,
    suspend: Suspend | None = None,
) -> str:
    """Closes a slice in one transaction: COMPLETED / FAILED / WAITING, or nothing (continue, or the job was
    paused/cancelled meanwhile). Returns what happened."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        if _slice_superseded(job, task, worker_id):
            return "superseded"
        if job.state != JobState.RUNNING:
            return job.state.lower()
        job.heartbeat_at = timezone.now()
        if outcome == "complete":
            try:
                job.result = to_json(result)
            except (TypeError, ValueError) as err:
                outcome, exc = "fail", err
        if outcome == "suspend" and _signal_already_sent(job, suspend):
            outcome = "continue"
        if outcome == "complete":
            job.progress, job.step = 100, ""  # done: nothing is in progress any more
            job.complete(by=worker_id, reason="completed")
        elif outcome == "fail":
            _job_fail(job, exc, worker_id)
        elif outcome == "suspend":
            _job_suspend(job, suspend, worker_id)
        job.save()
        if outcome != "continue":
            events.emit_state(job)
    return outcome


def run_slice(job_id, *, task=None, run_ctx: RunContext | None = None, deadline: float | None = None) -> str:
    """Runs one slice of a job: open, call the handler, close. Returns the outcome ("complete", "fail",
    "suspend", "continue", "paused", "cancelled", "superseded", "skipped"). Called with no transaction open
    (each step commits on its own)."""
    worker_id = run_ctx.worker_id if run_ctx else "runtime"
    job = _start(job_id, task, worker_id)
    if job is None:
        return "skipped"
    ctx = JobContext(
        job, task_id=task.task_id if task is not None else None, worker_id=worker_id, run_ctx=run_ctx, deadline=deadline
    )
    result = exc = suspend = None
    try:
        job_type = registry.get(job.job_type)
        result = job_type.handler(ctx, job.params)
        outcome = "continue" if ctx.stop_reason else "complete"
    except Suspend as s:
        outcome, suspend = "suspend", s
    except JobRunSuperseded:
        return "superseded"
    except Exception as e:
        log.warning("job %s (%s) failed: %s", job_id, job.job_type, e)
        outcome, exc = "fail", e
    return _finish(job_id, task, worker_id, outcome, result=result, exc=exc, suspend=suspend)


def run_slice_isolated(job_id, **kwargs) -> str:
    """`run_slice` outside the caller's transaction: in a thread with its own connection (so checkpoints commit
    as they happen while the tracker worker's transaction stays open)."""
    box: dict = {}

    def target():
        try:
            box["outcome"] = run_slice(job_id, **kwargs)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e
        finally:
            connections.close_all()

    thread = threading.Thread(target=target, name=f"job-{job_id}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["outcome"]
