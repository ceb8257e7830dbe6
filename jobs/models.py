"""Jobs: long-running, user-visible work with progress, a durable checkpoint, pause/resume/cancel, signals and
durable timers. A job runs as a sequence of slices; each slice is one tracker task of type JOB_RUN."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_fsm import FSMField, FSMModelMixin, transition

from tracker.ids import uuid7


class JobState(models.TextChoices):
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
ACTIVE_STATES = (JobState.CREATED, JobState.RUNNING, JobState.WAITING, JobState.PAUSED)
# How much of a failure a job (or a workflow step) keeps: the start of its message, the end of its traceback.
ERROR_CHARS = 2000
ERROR_DETAILS_CHARS = 20000


class Job(FSMModelMixin, models.Model):
    """One job. `state` moves only through the transitions below; each writes an audit row
    (tracker.audit, from the transition's `by=` and `reason=`)."""

    job_id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    job_type = models.CharField(max_length=100, db_index=True)
    schema_version = models.PositiveSmallIntegerField(default=1, help_text="Version of the type's params/checkpoint.")
    params = models.JSONField(default=dict, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    merchant_id = models.CharField(
        max_length=64,
        blank=True,
        default="",
        db_index=True,
        help_text="Tenant (merchant id) the job belongs to; empty for personal jobs.",
    )
    state = FSMField(max_length=16, choices=JobState.choices, default=JobState.CREATED, protected=True)
    progress = models.PositiveSmallIntegerField(default=0, help_text="0-100")
    step = models.CharField(max_length=200, blank=True, default="")
    checkpoint = models.JSONField(default=dict, blank=True, help_text="Last durable checkpoint of the handler.")
    checkpoint_seq = models.PositiveIntegerField(default=0, help_text="Number of checkpoints written.")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    error_details = models.TextField(blank=True, default="", help_text="Traceback of the failure.")
    attempts = models.PositiveIntegerField(default=0, help_text="Starts, retries and crash recoveries.")
    slices = models.PositiveIntegerField(default=0, help_text="Slices (JOB_RUN tasks) run so far.")
    run_task_id = models.UUIDField(null=True, blank=True, help_text="The latest JOB_RUN tracker task.")
    wait_signal = models.CharField(
        max_length=100, blank=True, default="", help_text="Signal the job waits for (WAITING)."
    )
    wake_at = models.DateTimeField(null=True, blank=True, help_text="When a WAITING job's timer fires.")
    wait_seq = models.PositiveIntegerField(default=0, help_text="Generation of the current wait (timer token).")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    workflow_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="Version of the workflow a run started with (workflow runs only)."
    )
    idempotency_key = models.CharField(
        max_length=200,
        null=True,
        blank=True,
        help_text="Client key of POST /api/jobs/: a repeated key returns this job.",
    )
    request_hash = models.CharField(
        max_length=64, blank=True, default="", help_text="Hash of the creating request's body (idempotency conflicts)."
    )

    class Meta:
        db_table = "jobs_job"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "created_at"], name="jobs_state_created_idx"),
            models.Index(fields=["merchant_id", "created_at"], name="jobs_merchant_created_idx"),
            models.Index(fields=["wake_at"], name="jobs_wake_idx", condition=Q(state="WAITING")),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(progress__lte=100), name="jobs_progress_le_100"),
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                name="jobs_owner_idempotency_key",
                condition=Q(idempotency_key__isnull=False),
            ),
        ]

    def __str__(self):
        return f"{self.job_type} {self.job_id} [{self.state}]"

    # Predicates (admin buttons, API).
    def can_cancel(self) -> bool:
        return self.state in ACTIVE_STATES

    def can_pause(self) -> bool:
        return self.state == JobState.RUNNING

    def can_resume(self) -> bool:
        return self.state == JobState.PAUSED

    def can_retry(self) -> bool:
        return self.state == JobState.FAILED

    def can_signal(self) -> bool:
        return self.state not in TERMINAL_STATES

    # Transitions (DESIGN.md, "State machines"). `by` is a user or a worker id; `reason` says why.
    @transition(field=state, source=JobState.CREATED, target=JobState.RUNNING)
    def start(self, by=None, reason="started"):
        self.started_at = self.started_at or timezone.now()

    @transition(field=state, source=JobState.RUNNING, target=JobState.COMPLETED)
    def complete(self, by=None, reason="completed"):
        self.finished_at = timezone.now()
        self.progress = 100

    @transition(field=state, source=JobState.RUNNING, target=JobState.FAILED)
    def fail(self, by=None, reason="failed"):
        self.finished_at = timezone.now()

    @transition(field=state, source=JobState.RUNNING, target=JobState.WAITING)
    def wait(self, by=None, reason="waiting"):
        pass

    @transition(field=state, source=JobState.WAITING, target=JobState.RUNNING)
    def wake(self, by=None, reason="woken"):
        pass

    @transition(field=state, source=JobState.RUNNING, target=JobState.PAUSED)
    def pause(self, by=None, reason="paused"):
        pass

    @transition(field=state, source=JobState.PAUSED, target=JobState.RUNNING)
    def resume(self, by=None, reason="resumed"):
        pass

    @transition(field=state, source=JobState.FAILED, target=JobState.CREATED)
    def retry(self, by=None, reason="retried"):
        self.finished_at = None
        self.error = ""
        self.error_details = ""
        self.result = None

    @transition(
        field=state,
        source=[JobState.CREATED, JobState.RUNNING, JobState.WAITING, JobState.PAUSED],
        target=JobState.CANCELLED,
    )
    def cancel(self, by=None, reason="cancelled"):
        self.finished_at = timezone.now()


class JobSignal(models.Model):
    """A named message to a job (e.g. approve/reject). Stored, so one sent before the job waits for it is
    delivered when it does. `consumed_seq` is the job's checkpoint_seq when the handler received it: a
    consumption counts once a later checkpoint is written (otherwise the next slice receives it again)."""

    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="signals")
    name = models.CharField(max_length=100)
    payload = models.JSONField(default=dict, blank=True)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    consumed_at = models.DateTimeField(null=True, blank=True)
    consumed_seq = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        db_table = "jobs_signal"
        indexes = [
            models.Index(
                fields=["job", "name", "id"], name="jobs_signal_pending_idx", condition=Q(consumed_at__isnull=True)
            )
        ]

    def __str__(self):
        return f"{self.name} -> {self.job_id}"


class JobEventKind(models.TextChoices):
    STATE = "state"
    PROGRESS = "progress"
    LOG = "log"
    STEP = "step"


class JobEvent(models.Model):
    """One change of a job, for the live stream and the admin's log: state, progress or a log line."""

    id = models.BigAutoField(primary_key=True)
    # db_index off: the (job, id) index below serves the foreign key
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events", db_index=False)
    kind = models.CharField(max_length=16, choices=JobEventKind.choices)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "jobs_event"
        indexes = [models.Index(fields=["job", "id"], name="jobs_event_job_idx")]
        ordering = ["id"]

    def __str__(self):
        return f"{self.kind} {self.data}"


# --- workflows (jobs.workflows): a run is a Job; its steps are rows of their own ------------------------------


class StepState(models.TextChoices):
    PENDING = "PENDING"  # a parent is not done
    QUEUED = "QUEUED"  # ready: its task is enqueued
    RUNNING = "RUNNING"
    RETRY = "RETRY"  # an attempt failed; waiting for its backoff
    WAITING = "WAITING"  # suspended on a signal or a timer
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # its condition on its parents' results was false
    CANCELLED = "CANCELLED"


STEP_DONE_STATES = (StepState.COMPLETED, StepState.SKIPPED)  # a child may start
STEP_TERMINAL_STATES = (StepState.COMPLETED, StepState.SKIPPED, StepState.FAILED, StepState.CANCELLED)
STEP_ACTIVE_STATES = (StepState.QUEUED, StepState.RUNNING, StepState.RETRY)  # the run is RUNNING while one is in these


class WorkflowStep(FSMModelMixin, models.Model):
    """One step of one workflow run. `state` moves only through the transitions below (each writes an audit
    row); changes happen in jobs.workflows.engine with the run's Job row locked."""

    id = models.BigAutoField(primary_key=True)
    # db_index off: the unique (job, name) constraint's index serves the foreign key
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="workflow_steps", db_index=False)
    name = models.CharField(max_length=100)
    position = models.PositiveSmallIntegerField(help_text="Place in the run's topological order.")
    depends_on = models.JSONField(default=list, blank=True)
    state = FSMField(max_length=16, choices=StepState.choices, default=StepState.PENDING, protected=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts over the run's life (retries included).")
    max_attempts = models.PositiveIntegerField(default=3)
    attempts_limit = models.PositiveIntegerField(
        default=3, help_text="attempts may grow to this (a retry adds max_attempts)."
    )
    task_id = models.UUIDField(null=True, blank=True, help_text="The step's current tracker task.")
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Of the last attempt.")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    error_details = models.TextField(blank=True, default="")
    checkpoint = models.JSONField(default=dict, blank=True)
    wait_signal = models.CharField(max_length=200, blank=True, default="")
    wake_at = models.DateTimeField(null=True, blank=True)
    wait_seq = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "jobs_workflow_step"
        ordering = ["job", "position"]
        constraints = [models.UniqueConstraint(fields=["job", "name"], name="jobs_workflow_step_unique_name")]
        indexes = [
            models.Index(
                fields=["finished_at"], name="jobs_wfstep_finished_idx", condition=Q(finished_at__isnull=False)
            )
        ]

    def __str__(self):
        return f"{self.name} [{self.state}]"

    @transition(field=state, source=StepState.PENDING, target=StepState.QUEUED)
    def queue(self, by=None, reason="ready"):
        self.queued_at = timezone.now()

    @transition(field=state, source=[StepState.QUEUED, StepState.RETRY], target=StepState.RUNNING)
    def begin(self, by=None, reason="started"):
        self.started_at = timezone.now()
        self.next_attempt_at = None

    @transition(field=state, source=StepState.RUNNING, target=StepState.COMPLETED)
    def complete(self, by=None, reason="completed"):
        self.finished_at = timezone.now()
        self.error = self.error_details = ""

    @transition(field=state, source=StepState.RUNNING, target=StepState.RETRY)
    def retry_later(self, by=None, reason="retry"):
        pass

    @transition(field=state, source=[StepState.QUEUED, StepState.RUNNING, StepState.RETRY], target=StepState.FAILED)
    def fail(self, by=None, reason="failed"):
        self.finished_at = timezone.now()
        self.next_attempt_at = None

    @transition(field=state, source=StepState.PENDING, target=StepState.SKIPPED)
    def skip(self, by=None, reason="condition false"):
        self.finished_at = timezone.now()

    @transition(field=state, source=StepState.RUNNING, target=StepState.WAITING)
    def suspend(self, by=None, reason="waiting"):
        pass

    @transition(field=state, source=[StepState.WAITING, StepState.RUNNING], target=StepState.QUEUED)
    def requeue(self, by=None, reason="woken"):
        self.queued_at = timezone.now()

    @transition(
        field=state,
        source=[StepState.PENDING, StepState.QUEUED, StepState.RUNNING, StepState.RETRY, StepState.WAITING],
        target=StepState.CANCELLED,
    )
    def cancel(self, by=None, reason="cancelled"):
        self.finished_at = timezone.now()
        self.next_attempt_at = None

    @transition(
        field=state,
        source=[StepState.FAILED, StepState.CANCELLED, StepState.COMPLETED, StepState.SKIPPED, StepState.PENDING],
        target=StepState.PENDING,
    )
    def reset(self, by=None, reason="retried"):
        """A fresh set of attempts (the count keeps going); result, error and checkpoint cleared."""
        self.attempts_limit = self.attempts + self.max_attempts
        self.result = None
        self.error = self.error_details = ""
        self.checkpoint = {}
        self.queued_at = self.started_at = self.finished_at = self.next_attempt_at = None
        self.duration_ms = None
        self.wait_signal, self.wake_at = "", None
