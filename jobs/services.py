"""Job services: create, cancel, pause, resume, retry, signal; the timer wake-up; making sure every runnable
job has its run task; the sweeper. Each runs in one transaction with the job row locked, writes the
transition's audit row (tracker.audit, from `by=`/`reason=`) and a state event (jobs.events)."""

import datetime as dt
import hashlib
import json
import logging
import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models.fields.json import KT
from django.utils import timezone

from jobs import conf, events, registry
from jobs.errors import IdempotencyConflict, JobNotFound, JobStateConflict, JobTypeForbidden, PersonalJobLimit
from jobs.models import ERROR_CHARS, TERMINAL_STATES, Job, JobEvent, JobEventKind, JobSignal, JobState
from jobs.runtime import JOB_RUN, JOB_WAKE, run_dedupe_key, to_json
from tracker import services as tracker_services
from tracker.errors import TaskStateConflict
from tracker.models import DUE_STATUSES, FINISHED_STATUSES, ProcessTracker, TaskStatus

log = logging.getLogger(__name__)


def _uuid(job_id) -> uuid.UUID:
    try:
        return job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except (ValueError, TypeError, AttributeError):
        raise JobNotFound() from None


def _locked(job_id) -> Job:
    """The job row, locked for update (call inside transaction.atomic())."""
    try:
        return Job.objects.select_for_update().get(pk=_uuid(job_id))
    except Job.DoesNotExist:
        raise JobNotFound() from None


def _conflict(job: Job, action: str, allowed: str) -> JobStateConflict:
    return JobStateConflict(f"Job is {job.state}; only {allowed} jobs can be {action}.", details={"state": job.state})


def run_priority(job: Job) -> int | None:
    """Tracker priority of the job's run tasks: the type's (100) for merchant jobs (imports, period closes);
    after staging entries for personal and demo jobs, so nobody's side job holds back the main path."""
    if not job.merchant_id or registry.get(job.job_type).demo:
        return int(conf.get("SIDE_PRIORITY"))
    return None


def _enqueue_run(job: Job) -> ProcessTracker | None:
    """Creates the job's JOB_RUN task unless one is unfinished (at most one per job: dedupe key
    `job:<id>`); a workflow run instead gets its ready steps queued (jobs.workflows.engine.run_ensure). Called
    inside a transaction with the job row locked; commits with it."""
    if job.workflow_version is not None:
        from jobs.workflows import engine

        return engine.run_ensure(job=job)
    key = run_dedupe_key(job.pk)
    if ProcessTracker.objects.filter(dedupe_key=key).exclude(status__in=FINISHED_STATUSES).exists():
        return None
    try:
        task = tracker_services.task_create(
            task_type=JOB_RUN,
            payload={"job_id": str(job.pk)},
            tenant=job.merchant_id,
            dedupe_key=key,
            priority=run_priority(job),
        )
    except IntegrityError:  # a concurrent enqueue won; its task runs the job
        return None
    job.run_task_id = task.task_id
    Job.objects.filter(pk=job.pk).update(run_task_id=task.task_id)
    return task


def _cancel_due_tasks(job: Job, by, reason: str) -> None:
    """Cancels the job's run/timer tasks that have not started (a running slice stops on its own)."""
    # The job's tasks by the payload's job id (an index lookup: tracker_payload_job_idx), not a scan.
    ids = (
        ProcessTracker.objects.filter(payload__has_key="job_id")
        .alias(job_ref=KT("payload__job_id"))
        .filter(job_ref=str(job.pk), task_type__in=[JOB_RUN, JOB_WAKE], status__in=DUE_STATUSES)
        .values_list("task_id", flat=True)
    )
    for task_id in list(ids):
        try:
            tracker_services.task_cancel(task_id=task_id, by=by, reason=reason)
        except TaskStateConflict:
            pass  # it started meanwhile; it will find the job not runnable


def _request_hash(job_type: str, params: dict, merchant_id: str) -> str:
    body = json.dumps(
        {"job_type": job_type, "params": params, "merchant_id": merchant_id}, sort_keys=True, cls=DjangoJSONEncoder
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _replay(owner, idempotency_key: str, request_hash: str) -> Job | None:
    """The job an earlier request with this key created (marked `replayed`), or None; 409 for another body."""
    job = Job.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
    if job is None:
        return None
    if job.request_hash != request_hash:
        raise IdempotencyConflict(
            f"Idempotency key {idempotency_key!r} was used for a different request.",
            details={"idempotency_key": idempotency_key, "job_id": str(job.pk)},
        )
    job.replayed = True
    return job


def _check_start_limits(jt: registry.JobType, owner, merchant_id: str) -> None:
    """Demo types: staff only (403). Personal jobs (no merchant) of a non-staff user: at most
    JOBS_PERSONAL_MAX_PER_USER unfinished at once (429), counted with the user's row locked so two requests
    cannot both pass. `owner=None` (the system, commands) is not limited."""
    if owner is None or not getattr(owner, "pk", None) or owner.is_staff:
        return
    if jt.demo:
        raise JobTypeForbidden(f"Only staff may start the demo job type {jt.name!r}.")
    if merchant_id:
        return
    type(owner).objects.select_for_update().filter(pk=owner.pk).first()
    limit = int(conf.get("PERSONAL_MAX_PER_USER"))
    unfinished = Job.objects.filter(owner=owner, merchant_id="").exclude(state__in=TERMINAL_STATES).count()
    if unfinished >= limit:
        raise PersonalJobLimit(
            f"You have {unfinished} unfinished personal jobs; at most {limit} may run at once.",
            details={"unfinished": unfinished, "limit": limit},
        )


def job_create(
    *, job_type: str, params: dict | None = None, owner=None, merchant_id: str = "", idempotency_key: str | None = None
) -> Job:
    """Validates `params` with the type's serializer (InvalidJobParams/UnknownJobType -> 400; the serializer
    gets the job's `merchant_id` and the `user` in its context) and, in the caller's transaction, creates the
    job (CREATED) and its first JOB_RUN task (a workflow run: its steps and the tasks of its root steps). Start
    limits (`_check_start_limits`): demo types are for staff (403), personal jobs are limited per user (429).
    With an `idempotency_key` (per owner), a repeated request with the same body returns the existing job with
    `job.replayed = True`; another body -> IdempotencyConflict (409)."""
    jt = registry.get(job_type)
    user = owner if getattr(owner, "pk", None) else None
    clean = to_json(jt.validate(params, context={"merchant_id": str(merchant_id or ""), "user": user}))
    key = idempotency_key if user is not None and idempotency_key else None
    request_hash = _request_hash(job_type, clean, str(merchant_id or "")) if key else ""
    if key and (existing := _replay(user, key, request_hash)) is not None:
        return existing
    try:
        with transaction.atomic():
            _check_start_limits(jt, user, str(merchant_id or ""))
            job = Job.objects.create(
                job_type=job_type,
                params=clean,
                owner=user,
                merchant_id=str(merchant_id or ""),
                schema_version=jt.schema_version,
                idempotency_key=key,
                request_hash=request_hash,
                workflow_version=jt.workflow.version if jt.workflow is not None else None,
            )
            events.emit_state(job)
            if jt.workflow is not None:
                from jobs.workflows import engine

                engine.run_create_steps(job=job, wf=jt.workflow)
            _enqueue_run(job)
    except IntegrityError:
        if key and (existing := _replay(user, key, request_hash)) is not None:
            return existing  # a concurrent request with the same key won
        raise
    job.replayed = False
    return job


def job_cancel(*, job_id, by=None, reason: str = "cancelled") -> Job:
    """CREATED, RUNNING, WAITING or PAUSED -> CANCELLED; otherwise 409. A running slice stops at its next
    `should_stop()`."""
    with transaction.atomic():
        job = _locked(job_id)
        if not job.can_cancel():
            raise _conflict(job, "cancelled", "CREATED, RUNNING, WAITING or PAUSED")
        if job.workflow_version is not None:
            from jobs.workflows import engine

            engine.run_cancel_steps(job=job, by=by, reason=reason)
        job.cancel(by=by, reason=reason)
        job.wait_signal, job.wake_at = "", None
        job.save()
        events.emit_state(job)
        _cancel_due_tasks(job, by, f"job cancelled: {reason}")
    return job


def job_pause(*, job_id, by=None, reason: str = "paused") -> Job:
    """RUNNING -> PAUSED; otherwise 409. The running slice stops at its next `should_stop()`."""
    with transaction.atomic():
        job = _locked(job_id)
        if not job.can_pause():
            raise _conflict(job, "paused", "RUNNING")
        job.pause(by=by, reason=reason)
        job.save()
        events.emit_state(job)
        _cancel_due_tasks(job, by, f"job paused: {reason}")
    return job


def job_resume(*, job_id, by=None, reason: str = "resumed") -> Job:
    """PAUSED -> RUNNING and a new slice from the last checkpoint; otherwise 409."""
    with transaction.atomic():
        job = _locked(job_id)
        if not job.can_resume():
            raise _conflict(job, "resumed", "PAUSED")
        job.resume(by=by, reason=reason)
        job.save()
        events.emit_state(job)
        _enqueue_run(job)
    return job


def job_retry(*, job_id, by=None, reason: str = "retried", from_start: bool = False) -> Job:
    """FAILED -> CREATED and a new run; otherwise 409. The run resumes from the last checkpoint, or from the
    start (checkpoint and progress cleared) with `from_start=True`."""
    with transaction.atomic():
        job = _locked(job_id)
        if not job.can_retry():
            raise _conflict(job, "retried", "FAILED")
        if job.workflow_version is not None:
            from jobs.workflows import engine

            engine.run_reset_for_retry(job=job, from_start=from_start, by=by)
        job.retry(by=by, reason=reason)
        if from_start:
            job.checkpoint, job.progress, job.step = {}, 0, ""
            job.checkpoint_seq += 1  # signals consumed before are not delivered again
        job.save()
        events.emit_state(job)
        _enqueue_run(job)
    return job


def job_signal(*, job_id, name: str, payload=None, by=None) -> JobSignal:
    """Stores signal `name` for the job; wakes it (WAITING -> RUNNING) when it waits for that signal. A
    finished job -> 409. A signal sent before the job waits for it is delivered when it does."""
    with transaction.atomic():
        job = _locked(job_id)
        if not job.can_signal():
            raise _conflict(job, "signalled", "unfinished")
        signal = JobSignal.objects.create(
            job=job,
            name=name,
            payload=to_json(payload if payload is not None else {}),
            sent_by=by if getattr(by, "pk", None) else None,
        )
        events.emit(
            job.pk,
            JobEventKind.LOG,
            {
                "message": f"signal {name!r} sent" + (f" by {by.get_username()}" if getattr(by, "pk", None) else ""),
                "signal": name,
            },
        )
        if job.workflow_version is not None:
            from jobs.workflows import engine

            engine.run_signal(job=job, name=name, by=by)
        elif job.state == JobState.WAITING and name in job.wait_signal.split(","):
            job.wake(by=by, reason=f"signal {name!r}")
            job.wait_signal, job.wake_at = "", None
            job.save()
            events.emit_state(job)
            _cancel_due_tasks(job, by, f"job woken by signal {name!r}")  # its timer, if any
            _enqueue_run(job)
    return signal


def job_wake(*, job_id, wait_seq: int | None = None, by="timer") -> bool:
    """The durable timer (JOB_WAKE task): WAITING -> RUNNING when the job still waits on the wait that set
    this timer (`wait_seq`) and its time has come. The handler sees a timed-out `wait_for_signal` as None.
    Returns whether it woke the job."""
    with transaction.atomic():
        try:
            job = _locked(job_id)
        except JobNotFound:
            return False
        if job.state != JobState.WAITING or (wait_seq is not None and job.wait_seq != wait_seq):
            return False
        if job.wake_at is None or job.wake_at > timezone.now():
            return False
        job.wake(by=by, reason="timer" if not job.wait_signal else f"timeout waiting for {job.wait_signal!r}")
        job.save()
        events.emit_state(job)
        _enqueue_run(job)
    return True


def job_ensure_run(*, job_id) -> ProcessTracker | None:
    """Makes sure a CREATED or RUNNING job has an unfinished JOB_RUN task (after a slice ends, and from the
    sweeper). Idempotent."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=_uuid(job_id)).first()
        if job is None or job.state not in (JobState.CREATED, JobState.RUNNING):
            return None
        return _enqueue_run(job)


def job_sweep(*, stale_seconds: float = 30) -> dict:
    """Repairs what a crash between two commits can leave behind (run every minute by django-q2):
    CREATED/RUNNING jobs without an unfinished run task get one, or FAIL when their last run task FAILED
    (its attempts ran out); WAITING jobs whose timer is overdue are woken."""
    now = timezone.now()
    stale = now - dt.timedelta(seconds=stale_seconds)
    repaired = failed = woken = 0
    # Every JOB_RUN task carries a dedupe key, so the partial unique index on unfinished keys finds them.
    unfinished = ProcessTracker.objects.filter(task_type=JOB_RUN, dedupe_key__isnull=False).exclude(
        status__in=FINISHED_STATUSES
    )
    busy = {str(p) for p in unfinished.values_list("payload__job_id", flat=True)}
    for job in Job.objects.filter(state__in=[JobState.CREATED, JobState.RUNNING], updated_at__lt=stale).only(
        "pk", "run_task_id"
    ):
        if str(job.pk) in busy:
            continue
        last = ProcessTracker.objects.filter(pk=job.run_task_id).first() if job.run_task_id else None
        if last is not None and last.status == TaskStatus.FAILED:
            with transaction.atomic():
                job = Job.objects.select_for_update().get(pk=job.pk)
                if job.state == JobState.RUNNING:
                    job.error = f"Run task failed: {last.last_error}"[:ERROR_CHARS]
                    job.error_details = last.error_details
                    job.fail(by="sweeper", reason=job.error)
                    job.save()
                    events.emit_state(job)
                    failed += 1
                    continue
        if job_ensure_run(job_id=job.pk):
            repaired += 1
    for job_id, seq in Job.objects.filter(
        state=JobState.WAITING, wake_at__lt=now - dt.timedelta(seconds=5)
    ).values_list("pk", "wait_seq"):
        woken += job_wake(job_id=job_id, wait_seq=seq, by="sweeper")
    if repaired or failed or woken:
        log.warning("job sweep: %d runs re-enqueued, %d jobs failed, %d timers fired late", repaired, failed, woken)
    return {"repaired": repaired, "failed": failed, "woken": woken, "events_pruned": job_prune_events()}


def job_prune_events(*, older_than_days: int | None = None, batch: int = 5000) -> int:
    """Deletes the events (not the jobs) of jobs that finished more than the retention ago (settings
    TRACKER["RETENTION_DAYS"] by default). Returns the number of events deleted."""
    from django.conf import settings

    days = settings.TRACKER["RETENTION_DAYS"] if older_than_days is None else older_than_days
    cutoff = timezone.now() - dt.timedelta(days=days)
    jobs = Job.objects.filter(state__in=TERMINAL_STATES, finished_at__lt=cutoff)
    ids = list(JobEvent.objects.filter(job__in=jobs).values_list("id", flat=True)[:batch])
    return JobEvent.objects.filter(id__in=ids).delete()[0] if ids else 0
