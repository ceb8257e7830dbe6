"""Consumers per cluster process (identity, slots, liveness), rescue of known-dead holders, the LISTEN connection's
reconnect, and the audit trail's retention and actor names. The multi-process faults are in tests/reliability."""

import datetime as dt
import os

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ

from recon import services as recon_services
from recon.models import ClosedPeriod, StagingEntry
from tests.recon.factories import ReconRuleFactory, stage
from tracker import audit, cluster, services, wakeup, worker
from tracker.models import ProcessTracker, Transition, WorkerHeartbeat
from tracker.worker import Worker


@pytest.fixture
def identity():
    """A fresh cluster identity for the test, the process's own restored afterwards."""
    before = cluster._identity
    yield cluster.start_new_identity()
    cluster._identity = before


def test_worker_ids_differ_between_clusters_with_the_same_host_and_pid(identity):
    first = worker.make_worker_id("s0")
    second_cluster = cluster.start_new_identity()
    second = worker.make_worker_id("s0")
    assert first != second and first.split(":")[:2] == second.split(":")[:2]  # same host, same pid
    assert second == f"{second_cluster.host}:{os.getpid()}:{second_cluster.id}:s0"
    assert cluster.private_queue(identity.id) != cluster.private_queue(second_cluster.id)


@pytest.mark.django_db
def test_each_cluster_gets_consumer_slots_of_its_own_and_asks_its_own_queue(
    identity, settings, django_capture_on_commit_callbacks
):
    settings.TRACKER = {**settings.TRACKER, "CONSUMERS": 2}
    with django_capture_on_commit_callbacks(execute=True):
        assert sorted(worker.consumers_ensure()) == [0, 1]
    other = cluster.start_new_identity()
    with django_capture_on_commit_callbacks(execute=True):
        assert sorted(worker.consumers_ensure()) == [0, 1]  # a second machine adds two consumers
    rows = WorkerHeartbeat.objects.order_by("cluster", "slot")
    assert sorted(rows.values_list("cluster", "slot")) == sorted(
        [(identity.id, 0), (identity.id, 1), (other.id, 0), (other.id, 1)]
    )
    # Each cluster's start requests went to its private queue, which only its own pusher reads.
    assert sorted(OrmQ.objects.values_list("key", flat=True)) == sorted(
        [cluster.private_queue(identity.id)] * 2 + [cluster.private_queue(other.id)] * 2
    )
    # Asked for recently: a second call asks for nothing more.
    assert worker.consumers_ensure() == []

    # A consumer takes a slot with its request's token; another cluster's slots are not touched.
    row = WorkerHeartbeat.objects.get(cluster=other.id, slot=0)
    assert worker.slot_acquire(0, worker.make_worker_id("s0"), row.request_token)
    status = worker.cluster_status()
    assert status["consumers_alive"] == 1 and status["consumers_wanted"] == 4  # two live clusters, two each
    assert WorkerHeartbeat.objects.get(cluster=identity.id, slot=0).worker_id == ""


@pytest.mark.django_db
def test_a_consumer_is_judged_dead_by_pid_only_on_its_own_machine(identity):
    gone = 2**22 + 12345  # above Linux's pid_max default: no such process
    here = WorkerHeartbeat(
        cluster=identity.id, slot=0, machine=cluster.machine(), worker_id="w", pid=gone, beat_at=timezone.now()
    )
    elsewhere = WorkerHeartbeat(
        cluster="other", slot=0, machine="other-host/boot/pid:[1]", worker_id="w", pid=gone, beat_at=timezone.now()
    )
    assert worker._owner_is_dead(here) and worker._slot_free(here)
    # The same pid on another machine or in another PID namespace says nothing: the beat decides.
    assert not worker._owner_is_dead(elsewhere) and not worker._slot_free(elsewhere)
    elsewhere.beat_at = timezone.now() - dt.timedelta(minutes=5)
    assert worker._slot_free(elsewhere)


@pytest.mark.django_db
def test_rescue_of_dead_holders_puts_their_tasks_back_at_once():
    held = [services.task_create(task_type="test.noop", payload={}) for _ in range(3)]
    other = services.task_create(task_type="test.noop", payload={})
    assert len(services.task_claim(worker_id="dead", limit=3)) == 3
    services.task_claim(worker_id="alive", limit=1)
    assert services.task_rescue() == {"retried": 0, "failed": 0}  # no lease has expired
    assert services.task_rescue(holders=["dead"]) == {"retried": 3, "failed": 0}
    for task in held:
        task.refresh_from_db()
        assert (task.status, task.attempts) == ("RETRY", 1) and task.run_after <= timezone.now()
    assert ProcessTracker.objects.get(pk=other.pk).locked_by == "alive"
    assert services.task_first_lease_expiry() == ProcessTracker.objects.get(pk=other.pk).lease_expires_at
    Worker("w").drain(budget_seconds=5)
    assert ProcessTracker.objects.filter(status="COMPLETED").count() == 3
    assert ProcessTracker.objects.get(pk=other.pk).status == "PROCESSING"  # a live holder keeps its task


@pytest.mark.django_db(transaction=True)
def test_listener_reconnects_after_its_connection_is_cut():
    listener = wakeup.Listener("test_channel")
    try:
        backend = listener.conn.info.backend_pid
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
        assert listener.wait(1.0) == []  # the cut is noticed, not raised
        assert listener.wait(0.1) == [] and listener.reconnects == 1
        assert listener.conn.info.backend_pid != backend
        wakeup.notify("test_channel", "after")
        assert listener.wait(5.0) == [("test_channel", "after")]
    finally:
        listener.close()


@pytest.mark.django_db
def test_who_made_a_change_survives_the_deletion_of_that_user(django_user_model):
    user = django_user_model.objects.create_user("ops-anna", is_staff=True)
    task = services.task_create(task_type="test.noop", payload={})
    services.task_cancel(task_id=task.pk, by=user)
    merchant = ReconRuleFactory().merchant
    period = recon_services.period_close(
        merchant=merchant, start_date=dt.date(2026, 1, 1), end_date=dt.date(2026, 1, 31), by=user
    )
    user.delete()
    rows = Transition.objects.filter(to_status__in=["CANCELLED", "CLOSED"])
    assert rows.count() == 2
    for row in rows:
        assert (row.by_user_id, row.by_name, row.by) == (None, "ops-anna", "ops-anna")
    assert ClosedPeriod.objects.get(pk=period.pk).closed_by is None  # the model forgets; the audit row does not


@pytest.mark.django_db
def test_prune_deletes_task_audit_rows_and_never_those_of_ledger_objects():
    rule = ReconRuleFactory()
    entry = stage(rule.account_one, order_id="keep-me")
    Worker("w").drain(budget_seconds=10)
    entry.refresh_from_db()
    assert entry.status == "PROCESSED"
    period = recon_services.period_close(
        merchant=rule.merchant, start_date=dt.date(2026, 1, 1), end_date=dt.date(2026, 1, 31)
    )
    recon_services.period_reopen(period=period)
    # A ledger object's audit row whose object id is the same text as the pruned task's id.
    audit.record_many(StagingEntry, [(entry.task_id, "PENDING", "PENDING")], by="w", reason="same id as the task")
    task_ct = ContentType.objects.get_for_model(ProcessTracker)
    ledger_rows = Transition.objects.exclude(content_type=task_ct)
    before = ledger_rows.count()
    kinds = set(ledger_rows.values_list("content_type__model", flat=True))
    assert {"stagingentry", "closedperiod"} <= kinds
    ProcessTracker.objects.update(completed_at=timezone.now() - dt.timedelta(days=400))

    assert services.task_prune(older_than_days=30) == 1
    assert not ProcessTracker.objects.exists()
    assert not Transition.objects.filter(content_type=task_ct).exists()
    assert ledger_rows.count() == before
    assert Transition.objects.filter(object_id=str(entry.task_id)).exclude(content_type=task_ct).exists()
