"""Tracker services: transitions, backoff, retries, rescue, lease loss, prune, stats."""

import datetime as dt

import pytest
from django.db import transaction
from django.utils import timezone
from django_fsm import TransitionNotAllowed

from tests.tracker.handlers import effects, record_effect
from tracker import audit, queries, registry, services
from tracker.errors import LeaseLost, TaskNotFound, TaskStateConflict
from tracker.models import ProcessTracker, Transition
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


def make(task_type="test.noop", **payload):
    return services.task_create(task_type=task_type, payload=payload)


def test_create_uses_the_handler_defaults():
    task = make("test.kill")
    assert (task.status, task.attempts, task.max_attempts, task.queue) == ("PENDING", 0, 3, "default")
    assert make().max_attempts == 10


def test_unknown_task_type_is_refused_at_creation():
    with pytest.raises(registry.UnknownTaskType):
        make("no.such.type")
    assert ProcessTracker.objects.count() == 0


def test_claim_marks_processing_with_lease_and_audit():
    task = make()
    claimed = services.task_claim(worker_id="w1", limit=10)
    assert [t.task_id for t in claimed] == [task.task_id]
    task.refresh_from_db()
    assert task.status == "PROCESSING" and task.attempts == 1 and task.locked_by == "w1"
    assert task.lease_expires_at > timezone.now()
    assert [(t.from_status, t.to_status, t.by) for t in audit.history(task)] == [("PENDING", "PROCESSING", "w1")]
    assert services.task_claim(worker_id="w2", limit=10) == []


def test_claim_respects_run_after_priority_and_limit():
    later = services.task_create(task_type="test.noop", payload={}, run_after=timezone.now() + dt.timedelta(hours=1))
    tasks = [make(i=i) for i in range(5)]
    claimed = services.task_claim(worker_id="w", limit=3)
    assert len(claimed) == 3 and later.task_id not in {t.task_id for t in claimed}
    assert {t.task_id for t in claimed} <= {t.task_id for t in tasks}


def test_illegal_transitions_are_refused():
    task = make()
    Worker("w").drain(budget_seconds=5)
    with pytest.raises(TaskStateConflict):
        services.task_cancel(task_id=task.task_id)
    with pytest.raises(TaskStateConflict):
        services.task_retry(task_id=task.task_id)
    task.refresh_from_db()
    with pytest.raises(TransitionNotAllowed):
        task.cancel()
    assert ProcessTracker.objects.get().status == "COMPLETED"


def test_protected_status_cannot_be_assigned():
    task = make()
    with pytest.raises(AttributeError):
        task.status = "COMPLETED"


def test_cancel_then_operator_retry_gives_fresh_attempts(staff_user):
    task = make("test.flaky", succeed_on=2)
    Worker("w").run_once()  # attempt 1 fails -> RETRY
    task.refresh_from_db()
    assert task.status == "RETRY" and task.attempts == 1
    services.task_cancel(task_id=task.task_id, by=staff_user, reason="not now")
    task.refresh_from_db()
    assert task.status == "CANCELLED"
    assert task.can_retry() and not task.can_cancel()
    services.task_retry(task_id=task.task_id, by=staff_user)
    task.refresh_from_db()
    assert (task.status, task.attempts) == ("PENDING", 0)
    history = [(t.from_status, t.to_status, t.by) for t in audit.history(task)]
    assert ("RETRY", "CANCELLED", "staff") in history and ("CANCELLED", "PENDING", "staff") in history


def test_unknown_ids_of_any_shape_are_not_found():
    for bad in ["nope", "00000000-0000-0000-0000-000000000000", 42]:
        with pytest.raises(TaskNotFound):
            services.task_cancel(task_id=bad)


def test_backoff_is_exponential_capped_with_bounded_jitter():
    handler = registry.TaskHandler()
    handler.backoff_base, handler.backoff_cap = 1.0, 60.0
    for attempts in range(1, 12):
        expected = min(60.0, 2.0 ** (attempts - 1))
        for _ in range(20):
            delay = handler.backoff(attempts)
            assert expected <= delay <= min(60.0, expected * 1.25)


def test_retryable_failures_back_off_then_succeed_exactly_once():
    task = make("test.flaky", succeed_on=3)
    for _ in range(50):
        Worker("w").drain(budget_seconds=2)
        task.refresh_from_db()
        if task.status == "COMPLETED":
            break
        assert task.status == "RETRY" and task.run_after > task.updated_at - dt.timedelta(seconds=1)
        ProcessTracker.objects.filter(pk=task.pk).update(run_after=timezone.now())
    assert task.status == "COMPLETED" and task.attempts == 3
    assert effects(task.task_id) == 1  # the failed attempts' writes rolled back
    assert "attempt 2 failed" not in task.last_error


def test_failures_stop_at_max_attempts_with_traceback():
    task = make("test.flaky")
    for _ in range(task.max_attempts):
        ProcessTracker.objects.filter(pk=task.pk).update(run_after=timezone.now())
        Worker("w").run_once()
    task.refresh_from_db()
    assert task.status == "FAILED" and task.attempts == task.max_attempts == 10
    assert "RetryableError: attempt 10 failed" in task.last_error and "Traceback" in task.error_details
    assert Worker("w").run_once().processed == 0


def test_rescue_moves_expired_leases_to_retry_or_failed():
    alive, dead, spent = make(), make(), make("test.kill")
    services.task_claim(worker_id="w", limit=10)
    ProcessTracker.objects.filter(pk__in=[dead.pk, spent.pk]).update(
        lease_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    ProcessTracker.objects.filter(pk=spent.pk).update(attempts=3)
    assert services.task_rescue() == {"retried": 1, "failed": 1}
    statuses = dict(ProcessTracker.objects.values_list("task_id", "status"))
    assert statuses == {alive.task_id: "PROCESSING", dead.task_id: "RETRY", spent.task_id: "FAILED"}
    assert ProcessTracker.objects.get(pk=dead.pk).attempts == 1  # the attempt counts
    assert Transition.objects.filter(by_worker="rescuer").count() == 2


def test_worker_that_lost_its_lease_cannot_complete():
    task = make()
    services.task_claim(worker_id="slow", limit=1)
    ProcessTracker.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    services.task_rescue()
    ProcessTracker.objects.filter(pk=task.pk).update(run_after=timezone.now())
    assert Worker("fast").drain(budget_seconds=5).succeeded == 1
    with pytest.raises(LeaseLost):
        with transaction.atomic():
            record_effect(task)
            services.task_complete_many(task_ids=[task.task_id], worker_id="slow")
    task.refresh_from_db()
    assert task.status == "COMPLETED" and task.locked_by == "fast" and effects(task.task_id) == 1


def test_renewing_leases_extends_only_own_tasks():
    make(), make()
    services.task_claim(worker_id="a", limit=1)
    services.task_claim(worker_id="b", limit=1)
    ProcessTracker.objects.update(lease_expires_at=timezone.now())
    assert services.task_renew_leases(worker_id="a") == 1
    assert (
        ProcessTracker.objects.get(locked_by="a").lease_expires_at
        > ProcessTracker.objects.get(locked_by="b").lease_expires_at
    )


@pytest.mark.django_db(transaction=True)
def test_renewing_leases_skips_rows_a_running_batch_holds():
    """The heartbeat renews from its own connection while the worker's batch transaction holds some of its
    tasks' rows (completed at the batch's start): it skips those instead of waiting for the commit."""
    import threading

    from django.db import connection

    make(), make()
    held, free = services.task_claim(worker_id="a", limit=2)
    ProcessTracker.objects.update(lease_expires_at=timezone.now())
    locked, release, result = threading.Event(), threading.Event(), {}

    def batch():
        with transaction.atomic():
            ProcessTracker.objects.select_for_update().get(pk=held.pk)
            locked.set()
            release.wait(10)
        connection.close()

    def heartbeat():
        result["renewed"] = services.task_renew_leases(worker_id="a")
        connection.close()

    holder = threading.Thread(target=batch)
    holder.start()
    assert locked.wait(10)
    beat = threading.Thread(target=heartbeat)
    beat.start()
    beat.join(5)
    waited = beat.is_alive()
    release.set()
    holder.join(10)
    beat.join(10)
    assert not waited and result["renewed"] == 1
    assert (
        ProcessTracker.objects.get(pk=free.pk).lease_expires_at
        > ProcessTracker.objects.get(pk=held.pk).lease_expires_at
    )


def test_dedupe_key_is_unique_while_unfinished():
    from django.db import IntegrityError

    services.task_create(task_type="test.noop", payload={}, dedupe_key="k")
    with pytest.raises(IntegrityError), transaction.atomic():
        services.task_create(task_type="test.noop", payload={}, dedupe_key="k")
    Worker("w").drain(budget_seconds=5)
    services.task_create(task_type="test.noop", payload={}, dedupe_key="k")  # the first one finished
    assert ProcessTracker.objects.filter(dedupe_key="k").count() == 2


def test_prune_deletes_old_finished_tasks_and_their_audit_rows():
    old, recent, pending = make(), make(), make()
    services.task_claim(worker_id="w", limit=2)
    services.task_complete_many(task_ids=[old.pk, recent.pk], worker_id="w")
    ProcessTracker.objects.filter(pk=old.pk).update(completed_at=timezone.now() - dt.timedelta(days=40))
    assert services.task_prune(older_than_days=30) == 1
    assert set(ProcessTracker.objects.values_list("pk", flat=True)) == {recent.pk, pending.pk}
    assert not Transition.objects.filter(object_id=str(old.pk)).exists()
    assert Transition.objects.filter(object_id=str(recent.pk)).exists()


def test_stats_count_per_status_and_type():
    make(), make(), make("test.permanent")
    Worker("w").drain(budget_seconds=5)
    make()
    stats = services.task_stats()
    assert stats["by_status"]["COMPLETED"] == 2 and stats["by_status"]["FAILED"] == 1
    assert stats["by_status"]["PENDING"] == 1
    assert stats["by_type"]["test.permanent"] == {"FAILED": 1}
    assert stats["throughput"]["last_minute"] == 2 and stats["oldest_due_age_seconds"] >= 0


def test_one_bad_task_does_not_sink_a_batch():
    good = [make() for _ in range(3)]
    bad = make("test.permanent")
    totals = Worker("w").run_once()
    assert (totals.processed, totals.succeeded, totals.failed) == (4, 3, 1)
    assert all(effects(t.task_id) == 1 for t in good) and effects(bad.task_id) == 0


def test_batch_handler_falls_back_to_one_by_one_when_the_batch_fails():
    good = [make("test.batched", i=i) for i in range(4)]
    bad = make("test.batched", bad=True)
    totals = Worker("w").run_once()
    assert (totals.processed, totals.succeeded, totals.failed) == (5, 4, 1)
    assert all(effects(t.task_id) == 1 for t in good) and effects(bad.task_id) == 0
    assert ProcessTracker.objects.get(pk=bad.pk).status == "FAILED"


def test_batch_handler_completes_a_clean_batch_together():
    tasks = [make("test.batched", i=i) for i in range(6)]
    assert Worker("w").run_once().succeeded == 6
    assert all(effects(t.task_id) == 1 for t in tasks)


def test_task_insert_from_table_writes_tasks_like_task_create():
    """The set-based insert used by the CSV import's COPY path: every column, the registry's queue, priority
    and max_attempts, PENDING, ON CONFLICT DO NOTHING."""
    import uuid

    from django.db import connection

    assert set(queries.TASK_FROM_TABLE_VALUES) == {f.column for f in ProcessTracker._meta.concrete_fields}
    reference = services.task_create(task_type="test.kill", payload={"n": 0}, tenant="t1")
    ids = [uuid.uuid4() for _ in range(3)]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE new_tasks ON COMMIT DROP AS SELECT id AS task_id,"
                " jsonb_build_object('n', n) AS payload FROM unnest(%s::uuid[]) WITH ORDINALITY AS u(id, n)",
                [ids],
            )
        assert services.task_insert_from_table(task_type="test.kill", tenant="t1", table="new_tasks") == 3
        assert services.task_insert_from_table(task_type="test.kill", tenant="t1", table="new_tasks") == 0
    fields = (
        "task_type",
        "queue",
        "priority",
        "tenant",
        "status",
        "attempts",
        "max_attempts",
        "dedupe_key",
        "last_error",
        "error_details",
        "locked_by",
        "lease_expires_at",
        "completed_at",
    )
    want = {f: getattr(reference, f) for f in fields}
    for n, task in enumerate(ProcessTracker.objects.filter(pk__in=ids).order_by("payload__n"), start=1):
        reference.refresh_from_db()
        assert {f: getattr(task, f) for f in fields} == want and task.payload == {"n": n}
        assert task.run_after == task.created_at
    claimed = services.task_claim(worker_id="w1", limit=10)
    assert {t.task_id for t in claimed} == {reference.task_id, *ids}


def test_audit_rows_keep_any_text():
    """The audit COPY text escapes what COPY's text format would read otherwise (tabs, newlines, backslashes,
    a literal \\N), and keeps the time to the microsecond."""
    from django.contrib.auth.models import User
    from django.contrib.contenttypes.models import ContentType

    ct = ContentType.objects.get_for_model(ProcessTracker)
    reason = 'tab\there\nnew line\\back slash\r "quoted" \\N not null'
    at = timezone.now()
    with transaction.atomic():
        audit.record_rows(
            [(ct.pk, "id\twith tab", "PENDING", "PROCESSING", reason), (ct.pk, "plain", "PROCESSING", "COMPLETED", "")],
            by="host:1\\slot\t0",
            at=at,
        )
        user = User.objects.create(username="auditor")
        audit.record_rows([(ct.pk, "by user", "FAILED", "PENDING", "retry")], by=user, at=at)
    first = Transition.objects.get(object_id="id\twith tab")
    assert (first.reason, first.by_worker, first.by_user_id, first.at) == (reason, "host:1\\slot\t0", None, at)
    assert Transition.objects.get(object_id="plain").reason == ""
    by_user = Transition.objects.get(object_id="by user")
    assert (by_user.by_user_id, by_user.by_worker, by_user.to_status) == (user.pk, "", "PENDING")


def test_claim_and_heartbeat_give_each_type_its_lease(settings):
    """A type's own lease_seconds (test.long_lease: 600 s) and everyone else's LEASE_SECONDS, in the claim and in
    the heartbeat; the queues filter picks only its queues' tasks."""
    default = settings.TRACKER["LEASE_SECONDS"]
    plain, long = make("test.noop"), make("test.long_lease")
    assert services.task_claim(worker_id="w", limit=10, queues=["elsewhere"]) == []
    before = timezone.now()
    claimed = {t.task_id: t for t in services.task_claim(worker_id="w", limit=10, queues=["default"])}
    after = timezone.now()
    assert set(claimed) == {plain.task_id, long.task_id}

    def leases():
        return {t.task_id: t.lease_expires_at for t in ProcessTracker.objects.filter(locked_by="w")}

    for lease in (leases(), {k: t.lease_expires_at for k, t in claimed.items()}):
        assert before + dt.timedelta(seconds=default) <= lease[plain.task_id] <= after + dt.timedelta(seconds=default)
        assert before + dt.timedelta(seconds=600) <= lease[long.task_id] <= after + dt.timedelta(seconds=600)
    ProcessTracker.objects.filter(locked_by="w").update(lease_expires_at=before)
    before = timezone.now()
    assert services.task_renew_leases(worker_id="w") == 2
    renewed = leases()
    assert renewed[plain.task_id] - before < dt.timedelta(seconds=default + 5) < renewed[long.task_id] - before
    assert renewed[long.task_id] >= before + dt.timedelta(seconds=600)
    assert services.task_rescue() == {"retried": 0, "failed": 0}  # no lease expired


def test_task_insert_rows_writes_tasks_with_the_callers_ids_like_task_create():
    """The workflow engine's insert: ids chosen by the caller, a tenant and a JSON payload per row, the rest as
    task_create writes it; claimable at once."""
    import uuid

    reference = services.task_create(task_type="test.kill", payload={"n": 0}, tenant="t1")
    ids = [uuid.uuid4() for _ in range(3)]
    rows = [(task_id, f'{{"n": {n}}}', f"t{n}") for n, task_id in enumerate(ids, start=1)]
    with transaction.atomic():
        assert services.task_insert_rows(task_type="test.kill", rows=rows) == 3
    assert services.task_insert_rows(task_type="test.kill", rows=[]) == 0
    fields = ("task_type", "queue", "priority", "status", "attempts", "max_attempts", "locked_by", "last_error")
    want = {f: getattr(reference, f) for f in fields}
    for n, task_id in enumerate(ids, start=1):
        task = ProcessTracker.objects.get(pk=task_id)
        assert {f: getattr(task, f) for f in fields} == want
        assert (task.payload, task.tenant) == ({"n": n}, f"t{n}") and task.run_after == task.created_at
    assert {t.task_id for t in services.task_claim(worker_id="w1", limit=10)} == {reference.task_id, *ids}


def test_task_complete_held_completes_only_what_the_worker_still_holds():
    tasks = [make() for _ in range(3)]
    claimed = services.task_claim(worker_id="w1", limit=10)
    assert len(claimed) == 3
    ProcessTracker.objects.filter(pk=tasks[0].pk).update(locked_by="someone-else")  # taken over meanwhile
    with transaction.atomic():
        done = services.task_complete_held(task_ids=[t.task_id for t in tasks], worker_id="w1")
    assert done == {tasks[1].task_id, tasks[2].task_id}
    status = dict(ProcessTracker.objects.values_list("task_id", "status"))
    assert [status[t.task_id] for t in tasks] == ["PROCESSING", "COMPLETED", "COMPLETED"]
    assert [h.to_status for h in audit.history(ProcessTracker.objects.get(pk=tasks[1].pk))][-1] == "COMPLETED"
    assert [h.to_status for h in audit.history(ProcessTracker.objects.get(pk=tasks[0].pk))][-1] == "PROCESSING"
    assert services.task_complete_held(task_ids=[], worker_id="w1") == set()
    with pytest.raises(LeaseLost), transaction.atomic():
        services.task_complete_many(task_ids=[tasks[0].task_id], worker_id="w1")
