"""The durable task ledger: tasks, their audit trail, and consumer heartbeats."""

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KT
from django.utils import timezone
from django_fsm import FSMField, FSMModelMixin, can_proceed, transition

from tracker.ids import uuid7


class TaskStatus(models.TextChoices):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    RETRY = "RETRY"
    CANCELLED = "CANCELLED"


DUE_STATUSES = (TaskStatus.PENDING, TaskStatus.RETRY)
# Payload keys whose values the task search finds by an index (a staging entry id, a job id, an upload id).
PAYLOAD_SEARCH_KEYS = ("staging_entry_id", "job_id", "upload_id")
# Task types claimed at most a few per claim (handlers with `claim_limited`: workflow steps). They have a due index
# of their own and the main due index leaves them out, so neither half of the claim walks past the other's rows.
ONE_PER_CLAIM_TYPES = ("WORKFLOW_STEP",)
FINISHED_STATUSES = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


def _may_change(instance, user) -> bool:
    """Admin FSM buttons: users with the change permission on tasks."""
    return user.has_perm("tracker.change_processtracker")


class ProcessTracker(FSMModelMixin, models.Model):
    """One unit of work. Status moves only along the transitions declared below: through their methods, or
    through the set-based statements written from them (tracker.queries), which write the same audit rows."""

    task_id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    task_type = models.CharField(max_length=64)
    queue = models.CharField(max_length=64, default="default")
    priority = models.SmallIntegerField(default=100, help_text="Lower runs first.")
    tenant = models.CharField(
        max_length=64, blank=True, default="", help_text="Opaque owner id (merchant) used for access control."
    )
    payload = models.JSONField(default=dict, blank=True)
    status = FSMField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.PENDING, protected=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=10)
    run_after = models.DateTimeField(default=timezone.now)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    locked_by = models.CharField(max_length=128, blank=True, default="")
    dedupe_key = models.CharField(max_length=200, null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    error_details = models.TextField(blank=True, default="", help_text="Traceback of the last error.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    processing_started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "process_tracker"
        verbose_name = "task"
        indexes = [
            # The claim query: due PENDING/RETRY rows in its exact order (tasks created together share run_after).
            models.Index(
                fields=["priority", "run_after", "task_id"],
                name="tracker_due_idx",
                condition=Q(status__in=["PENDING", "RETRY"]) & ~Q(task_type__in=ONE_PER_CLAIM_TYPES),
            ),
            models.Index(
                fields=["priority", "run_after", "task_id"],
                name="tracker_due_one_per_claim_idx",
                condition=Q(status__in=["PENDING", "RETRY"], task_type__in=ONE_PER_CLAIM_TYPES),
            ),
            # Rescue: expired leases.
            models.Index(fields=["lease_expires_at"], name="tracker_lease_idx", condition=Q(status="PROCESSING")),
            # Pruning and throughput stats.
            models.Index(
                fields=["completed_at"],
                name="tracker_completed_idx",
                condition=Q(status__in=["COMPLETED", "FAILED", "CANCELLED"]),
            ),
            # Admin/API. Every status change is a non-HOT update (it changes indexed columns), so each
            # non-partial index costs an insertion per transition: the lists use created_at (admin ordering,
            # date filter), a merchant's tasks tenant + created_at, and the status filters partial indexes:
            # FAILED/CANCELLED/RETRY this one, PENDING/RETRY the due index, PROCESSING the lease index; COMPLETED
            # (the bulk) is found by scanning created_at. task_type and queue have no index of their own.
            models.Index(fields=["tenant", "created_at"], name="tracker_tenant_created_idx"),
            # In the lists' exact order (created_at, task_id), so the planner never prefers walking created_at.
            models.Index(
                fields=["status", "created_at", "task_id"],
                name="tracker_attention_idx",
                condition=Q(status__in=["FAILED", "CANCELLED", "RETRY"]),
            ),
            # Queue lag and due counts per queue (tracker.counters.queue_rows): the oldest due task of a queue
            # is the first entry of its range, and the not-yet-due ones a short range after `now`.
            models.Index(
                fields=["queue", "run_after"],
                name="tracker_queue_due_idx",
                condition=Q(status__in=["PENDING", "RETRY"]),
            ),
            # Payload search (the admin's search box, jobs._cancel_due_tasks): the ids that payloads carry,
            # each a partial expression index over the tasks that have the key (PAYLOAD_SEARCH_KEYS).
            *[
                models.Index(
                    KT(f"payload__{key}"),
                    name=f"tracker_payload_{key.split('_')[0]}_idx",
                    condition=Q(payload__has_key=key),
                )
                for key in PAYLOAD_SEARCH_KEYS
            ],
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["dedupe_key"],
                name="tracker_dedupe_unfinished",
                condition=Q(dedupe_key__isnull=False) & ~Q(status__in=["COMPLETED", "FAILED", "CANCELLED"]),
            ),
            models.CheckConstraint(condition=Q(max_attempts__gte=1), name="tracker_max_attempts_positive"),
        ]

    def __str__(self):
        return f"{self.task_type} {self.task_id} [{self.status}]"

    # Predicates used by the admin and the API: the transitions' own sources.
    def can_retry(self) -> bool:
        return can_proceed(self.operator_retry)

    def can_cancel(self) -> bool:
        return can_proceed(self.cancel)

    # Transitions: the one truth of the task's state machine. An operator's action on one task calls its method
    # (`by`, a user, and `reason` are recorded by tracker.audit on post_transition); the set-based statements of
    # tracker.queries are written from these declarations (tracker.fsm; tests/tracker/test_fsm.py).
    @transition(
        field=status,
        source=[TaskStatus.FAILED, TaskStatus.CANCELLED],
        target=TaskStatus.PENDING,
        permission=_may_change,
        custom={"label": "Retry", "admin": True},
    )
    def operator_retry(self, by=None, reason="operator retry"):
        """A fresh set of attempts; the audit trail keeps the old ones. Consumers wake at commit."""
        from tracker import wakeup

        wakeup.notify()
        self.attempts = 0
        self.run_after = timezone.now()
        self.lease_expires_at = None
        self.locked_by = ""
        self.completed_at = None

    @transition(
        field=status,
        source=[TaskStatus.PENDING, TaskStatus.RETRY],
        target=TaskStatus.CANCELLED,
        permission=_may_change,
        custom={"label": "Cancel", "admin": True},
    )
    def cancel(self, by=None, reason="cancelled"):
        self.completed_at = timezone.now()

    # Worker-side transitions are only made set-based (tracker.queries: claim, complete, retry, fail, rescue).
    @transition(
        field=status,
        source=[TaskStatus.PENDING, TaskStatus.RETRY],
        target=TaskStatus.PROCESSING,
        custom={"admin": False},
    )
    def start(self, by=None, reason="claimed"):
        pass

    @transition(field=status, source=TaskStatus.PROCESSING, target=TaskStatus.COMPLETED, custom={"admin": False})
    def complete(self, by=None, reason="completed"):
        pass

    @transition(field=status, source=TaskStatus.PROCESSING, target=TaskStatus.RETRY, custom={"admin": False})
    def schedule_retry(self, by=None, reason=""):
        pass

    @transition(field=status, source=TaskStatus.PROCESSING, target=TaskStatus.FAILED, custom={"admin": False})
    def fail(self, by=None, reason=""):
        pass


class Transition(models.Model):
    """Audit row of one state change of any audited object (tasks, staging entries, transactions, jobs).

    64-bit id and a text object id, so UUID keys and millions of rows fit (DESIGN.md)."""

    id = models.BigAutoField(primary_key=True)
    # No index (the prefix of audit_object_idx) and no database constraint: content types are created once
    # and never deleted, and a constraint would cost a check per audit row at every commit.
    content_type = models.ForeignKey(ContentType, on_delete=models.PROTECT, db_index=False, db_constraint=False)
    object_id = models.CharField(max_length=64)
    from_status = models.CharField(max_length=32)
    to_status = models.CharField(max_length=32)
    at = models.DateTimeField(default=timezone.now)
    by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )  # audit_by_user_idx (partial)
    by_worker = models.CharField(max_length=128, blank=True, default="")
    # The user's name when the row was written: who made a change survives the user's deletion.
    by_name = models.CharField(max_length=150, blank=True, default="")
    reason = models.TextField(blank=True, default="")

    class Meta:
        db_table = "audit_transition"
        indexes = [
            models.Index(fields=["content_type", "object_id", "id"], name="audit_object_idx"),
            # Almost every row is written by a worker (by_user NULL); the partial index still serves the
            # SET_NULL update (`by_user_id IN (...)`) when a user is deleted.
            models.Index(fields=["by_user"], name="audit_by_user_idx", condition=Q(by_user__isnull=False)),
        ]
        ordering = ["id"]

    @property
    def by(self) -> str:
        if self.by_user_id:
            return self.by_user.get_username()
        return self.by_name or self.by_worker or "system"

    def __str__(self):
        return f"{self.from_status} -> {self.to_status} by {self.by}"


class WorkerHeartbeat(models.Model):
    """One consumer slot of one cluster process (`TRACKER_CONSUMERS` slots per cluster). A consumer loop owns
    its cluster's slot while it beats; only that cluster starts consumers for its slots (tracker.worker). Rows of
    clusters that stopped beating long ago are deleted by the maintenance schedule."""

    id = models.BigAutoField(primary_key=True)
    cluster = models.CharField(max_length=32, help_text="Random id of the cluster process (tracker.cluster).")
    slot = models.PositiveSmallIntegerField()
    host = models.CharField(max_length=100, blank=True, default="")
    cluster_pid = models.PositiveIntegerField(null=True, blank=True, help_text="The cluster's sentinel process.")
    machine = models.CharField(
        max_length=255, blank=True, default="", help_text="Host, boot and PID namespace: where the pids can be checked."
    )
    worker_id = models.CharField(max_length=128, blank=True, default="", help_text="The owner; empty when free.")
    pid = models.PositiveIntegerField(null=True, blank=True, help_text="The owner's process.")
    started_at = models.DateTimeField(null=True, blank=True)
    beat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of the slot's cluster.")
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="When a consumer was last asked to start.")
    request_token = models.CharField(
        max_length=32,
        blank=True,
        default="",
        help_text="Token of the current start request; older requests exit at once.",
    )
    processed = models.BigIntegerField(default=0, help_text="Tasks finished by the current owner.")

    class Meta:
        db_table = "tracker_worker_heartbeat"
        ordering = ["cluster", "slot"]
        constraints = [models.UniqueConstraint(fields=["cluster", "slot"], name="tracker_heartbeat_cluster_slot")]

    def __str__(self):
        return f"{self.host}:{self.cluster_pid} ({self.cluster}) slot {self.slot}: {self.worker_id or '-'}"


class Outcome(models.TextChoices):
    """How a task left PROCESSING (or, for CANCELLED, a due state), as the finished-task counters see it."""

    COMPLETED = "completed"
    FAILED = "failed"
    RETRIED = "retried"
    CANCELLED = "cancelled"


class TaskCounter(models.Model):
    """Tasks finished in one minute (resolution 60) or, after the rollup, one hour (3600), by tenant, type, queue,
    outcome and the worker that finished them, with the sums of their run and wait seconds. Written by an upsert
    in the transaction that finishes the tasks (tracker.counters), one per statement, never a row per task; the
    worker column keeps two consumers from ever updating the same row (rolled-up rows have worker '')."""

    id = models.BigAutoField(primary_key=True)
    resolution = models.PositiveIntegerField(default=60, help_text="Seconds covered by the bucket: 60 or 3600.")
    bucket = models.DateTimeField(help_text="Start of the minute or hour.")
    tenant = models.CharField(max_length=64, blank=True, default="")
    task_type = models.CharField(max_length=64)
    queue = models.CharField(max_length=64)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    worker = models.CharField(max_length=128, blank=True, default="")
    count = models.BigIntegerField(default=0)
    run_seconds = models.FloatField(default=0.0, help_text="Sum of the tasks' run durations.")
    wait_seconds = models.FloatField(default=0.0, help_text="Sum of the time from due to claimed.")
    run_max = models.FloatField(default=0.0, help_text="Longest run duration.")

    class Meta:
        db_table = "tracker_task_counter"
        indexes = [models.Index(fields=["bucket"], name="tracker_counter_bucket_idx")]  # reads by time range
        constraints = [
            models.UniqueConstraint(
                fields=["resolution", "bucket", "tenant", "task_type", "queue", "outcome", "worker"],
                name="tracker_counter_key",
            )
        ]

    def __str__(self):
        return f"{self.bucket:%Y-%m-%d %H:%M} {self.task_type} {self.outcome}: {self.count}"


class TaskTotal(models.Model):
    """Finished tasks of all time up to `CounterWatermark("totals")` (the counters' rows before it, folded in by
    tracker.counters.fold_totals), so a scrape adds only the minutes since; they outlive the counters' retention."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.CharField(max_length=64, blank=True, default="")
    task_type = models.CharField(max_length=64)
    queue = models.CharField(max_length=64)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    count = models.BigIntegerField(default=0)
    run_seconds = models.FloatField(default=0.0)
    wait_seconds = models.FloatField(default=0.0)

    class Meta:
        db_table = "tracker_task_total"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "task_type", "queue", "outcome"], name="tracker_total_key")
        ]


class CounterWatermark(models.Model):
    """How far the counters have been folded into `TaskTotal` (counter buckets before `at`)."""

    name = models.CharField(max_length=32, primary_key=True)
    at = models.DateTimeField()

    class Meta:
        db_table = "tracker_counter_watermark"


class TaskStatusCount(models.Model):
    """Tasks now in each status per tenant, queue and type: what `tracker_status_delta` rows (written by statement
    triggers on the task table, migration 0008) add up to after compaction (tracker.counters.compact). Readers
    add both tables, so they never count the task table."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.CharField(max_length=64, blank=True, default="")
    queue = models.CharField(max_length=64)
    task_type = models.CharField(max_length=64)
    status = models.CharField(max_length=16)
    n = models.BigIntegerField(default=0)

    class Meta:
        db_table = "tracker_status_count"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "queue", "task_type", "status"], name="tracker_status_count_key")
        ]


class TaskQueue(models.Model):
    """A queue's control row: paused queues are not claimed by any consumer (the claim reads this table)."""

    name = models.CharField(max_length=64, primary_key=True)
    paused = models.BooleanField(default=False)
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        db_table = "tracker_queue"

    def __str__(self):
        return f"{self.name}{' (paused)' if self.paused else ''}"


class QueueSample(models.Model):
    """A queue's depth and lag in one minute (the last sample taken in it), for the dashboard's charts over time.
    Taken by the consumers every few seconds (tracker.services.counters_tick); kept COUNTER_RETENTION_DAYS."""

    id = models.BigAutoField(primary_key=True)
    minute = models.DateTimeField()
    queue = models.CharField(max_length=64)
    due = models.BigIntegerField(default=0)
    running = models.BigIntegerField(default=0)
    lag_seconds = models.FloatField(default=0.0)

    class Meta:
        db_table = "tracker_queue_sample"
        constraints = [models.UniqueConstraint(fields=["minute", "queue"], name="tracker_queue_sample_key")]
