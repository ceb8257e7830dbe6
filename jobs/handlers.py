"""Tracker task types of jobs (thin): JOB_RUN runs one slice of a job; JOB_WAKE is a job's durable timer.

Registered in `JobsConfig.ready` (with the workflow step type, jobs.workflows.tasks)."""

import time

from django.db import transaction

from jobs import conf, runtime, services
from jobs.errors import JobRunFailed, JobRunSuperseded
from jobs.models import Job, JobState
from tracker.errors import LeaseLost
from tracker.registry import TaskHandler


def _after_commit(job_id):
    """Once the tracker has committed this task as COMPLETED, the job gets its next run if it needs one (the
    dedupe key allows one unfinished run task per job, so it cannot be created before)."""
    transaction.on_commit(lambda: services.job_ensure_run(job_id=job_id), robust=True)


def _fail_if_job_failed(job_id, task) -> None:
    """A slice that failed its job fails its run task too (JobRunFailed, not retryable), so the task list's
    FAILED filter and the job agree. Retrying the job enqueues a new run task; retrying this task only finds the
    job FAILED again."""
    error = (
        Job.objects.filter(pk=job_id, state=JobState.FAILED, run_task_id=task.task_id)
        .values_list("error", flat=True)
        .first()
    )
    if error is not None:
        raise JobRunFailed(f"The job failed: {error}" if error else "The job failed.")


class JobRun(TaskHandler):
    """payload {"job_id"}: one slice of the job (see jobs.runtime)."""

    task_type = runtime.JOB_RUN
    queue = "default"
    max_attempts = 5  # crashes in a row (lease expiry) before the sweeper fails the job
    long_running = True
    backoff_base = 0.5
    backoff_cap = 10

    def run(self, task, ctx):
        self._run(task, ctx, deadline=time.monotonic() + conf.get("SLICE_SECONDS"))

    def _run(self, task, ctx, deadline):
        job_id = task.payload["job_id"]
        try:
            runtime.run_slice_isolated(job_id, task=task, run_ctx=ctx, deadline=deadline)
        except JobRunSuperseded as exc:
            raise LeaseLost(str(exc)) from exc
        _fail_if_job_failed(job_id, task)
        _after_commit(job_id)

    def run_batch(self, tasks, ctx):
        """Several runs claimed in one batch share one slice budget, so the batch stays within django-q2's
        timeout; runs left when the budget is spent end at once and are re-enqueued after the commit."""
        deadline = time.monotonic() + conf.get("SLICE_SECONDS")
        # A job that failed in the batch raises (JobRunFailed): the worker then runs the batch's tasks one by one,
        # each slice finds its job where the batch left it, and only the failed job's task ends FAILED.
        for task in tasks:
            if time.monotonic() < deadline - 1:
                try:
                    self._run(task, ctx, deadline)
                    continue
                except LeaseLost:
                    pass
            _after_commit(task.payload["job_id"])


class JobWake(TaskHandler):
    """payload {"job_id", "wait_seq"}: a WAITING job's timer (run_after = its wake_at)."""

    task_type = runtime.JOB_WAKE
    max_attempts = 10
    backoff_base = 1
    backoff_cap = 30

    def run(self, task, ctx):
        services.job_wake(job_id=task.payload["job_id"], wait_seq=task.payload.get("wait_seq"))


TASK_HANDLERS = (JobRun, JobWake)
