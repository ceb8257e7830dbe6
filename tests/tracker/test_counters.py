"""Counters (tracker.counters) agree with the task rows: after in-process runs, a real cluster with retries,
rescues of killed workers, operator cancels and pruning; rollup keeps the totals."""

import datetime as dt

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from tests.conftest import wait_until
from tracker import counters, services
from tracker.models import ProcessTracker, TaskCounter, TaskStatusCount, Transition
from tracker.worker import Worker


def row_status_counts() -> dict:
    return {
        (q, t, s): n
        for q, t, s, n in ProcessTracker.objects.order_by()
        .values_list("queue", "task_type", "status")
        .annotate(n=Count("pk"))
    }


def counted_status() -> dict:
    return {(q, t, s): n for q, t, s, n in counters.status_counts()}


def finished_by_type_outcome() -> dict:
    return {(t, o): n for t, o, n, *_ in counters.finished_totals(group_by=("task_type", "outcome"))}


def expected_finished() -> dict:
    """What the audit trail says happened: moves to COMPLETED, FAILED and RETRY out of PROCESSING, and to
    CANCELLED, per task type."""
    types = {str(k): v for k, v in ProcessTracker.objects.values_list("task_id", "task_type")}
    names = {"COMPLETED": "completed", "FAILED": "failed", "RETRY": "retried", "CANCELLED": "cancelled"}
    out = {}
    for object_id, src, dst in Transition.objects.filter(to_status__in=names).values_list(
        "object_id", "from_status", "to_status"
    ):
        if dst != "CANCELLED" and src != "PROCESSING":
            continue
        key = (types[object_id], names[dst])
        out[key] = out.get(key, 0) + 1
    return out


@pytest.mark.django_db
def test_counts_follow_every_change_in_process():
    tasks = services.task_create_many([services.TaskSpec("test.noop", {"i": i}, tenant="m1") for i in range(30)])
    services.task_create_many([services.TaskSpec("test.permanent", {}) for _ in range(3)])
    flaky = services.task_create(task_type="test.flaky", payload={"succeed_on": 2})
    later = services.task_create(task_type="test.noop", payload={}, run_after=timezone.now() + dt.timedelta(hours=1))
    assert counted_status() == row_status_counts()
    Worker("w1", batch_size=7).drain(budget_seconds=10)
    ProcessTracker.objects.filter(pk=flaky.pk).update(run_after=timezone.now())
    Worker("w2").drain(budget_seconds=10)
    services.task_cancel(task_id=later.task_id, by="someone")
    assert counted_status() == row_status_counts()
    counters.compact()
    assert TaskStatusCount.objects.exists() and counted_status() == row_status_counts()
    finished = finished_by_type_outcome()
    assert finished == expected_finished()
    assert finished[("test.noop", "completed")] == 30 and finished[("test.flaky", "retried")] == 1
    assert finished[("test.noop", "cancelled")] == 1 and finished[("test.permanent", "failed")] == 3
    # Counters are per statement, not per task: one row per (minute, tenant, type, queue, outcome, worker).
    assert TaskCounter.objects.count() < 15
    # Operator retry and a bulk cancel move the status counts too; the retried rows are not "finished".
    services.task_act_ids(
        action="retry", task_ids=[t.task_id for t in ProcessTracker.objects.filter(status="FAILED")], by="op"
    )
    services.task_bulk_run(action="cancel", filter={"task_type": "test.permanent"}, by="op")
    assert counted_status() == row_status_counts()
    assert finished_by_type_outcome() == expected_finished()
    assert finished_by_type_outcome()[("test.permanent", "cancelled")] == 3
    assert tasks[0].task_id  # the tasks were created in tenant m1
    stats = services.task_stats(tenants={"m1"})
    assert stats["by_status"]["COMPLETED"] == 30 and stats["throughput"]["last_hour"] == 30


@pytest.mark.django_db
def test_pruning_and_rollup_keep_counters_true():
    services.task_create_many([services.TaskSpec("test.noop", {"i": i}) for i in range(20)])
    Worker("w").drain(budget_seconds=10)
    before = finished_by_type_outcome()
    ProcessTracker.objects.filter(pk__in=list(ProcessTracker.objects.values_list("pk", flat=True)[:12])).update(
        completed_at=timezone.now() - dt.timedelta(days=60)
    )
    assert services.task_prune(older_than_days=30) == 12
    counters.compact()
    assert counted_status() == row_status_counts() == {("default", "test.noop", "COMPLETED"): 8}
    assert finished_by_type_outcome() == before  # history of finished work outlives the rows
    result = counters.rollup(now=timezone.now() + dt.timedelta(days=3))
    assert result["rolled_up"] >= 1
    assert set(TaskCounter.objects.values_list("resolution", flat=True)) == {3600}
    assert finished_by_type_outcome() == before
    all_time = counters.all_time_totals()
    counters.fold_totals(now=timezone.now() + dt.timedelta(days=1))
    assert counters.all_time_totals() == all_time  # folded rows are counted once
    counters.fold_totals(now=timezone.now() + dt.timedelta(days=2))
    counters.rollup(now=timezone.now() + dt.timedelta(days=400))
    assert not TaskCounter.objects.exists()
    assert counters.all_time_totals() == all_time  # the totals outlive the counters' retention


def _minute_row(bucket, n: int, task_type: str = "test.noop") -> TaskCounter:
    return TaskCounter.objects.create(
        resolution=60, bucket=bucket, task_type=task_type, queue="default", outcome="completed", worker="w", count=n
    )


@pytest.mark.django_db
def test_ended_hours_are_read_from_hourly_rows_and_counted_once():
    services.task_create_many([services.TaskSpec("test.noop", {"i": i}) for i in range(4)])
    Worker("w").drain(budget_seconds=10)
    now = timezone.now()
    hour = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    _minute_row(hour + dt.timedelta(minutes=5), 5)
    _minute_row(hour + dt.timedelta(minutes=59), 2)

    def total(**kwargs) -> int:
        return sum(n for _t, _o, n, *_ in counters.finished_totals(group_by=("task_type", "outcome"), **kwargs))

    def day_bar(at) -> int:
        got = counters.series(since=now - dt.timedelta(days=1), step_seconds=3600, by=("outcome",))
        return got["outcome"]["completed"][got["buckets"].index(at)]

    assert total() == 11 and day_bar(hour) == 7  # no rollup yet: minute rows
    assert counters.rollup_hours(now=now) >= 1
    hourly = TaskCounter.objects.get(resolution=3600, bucket=hour)
    assert (hourly.count, hourly.worker) == (7, "")
    assert TaskCounter.objects.filter(resolution=60, bucket__lt=hour + dt.timedelta(hours=1)).count() == 2  # kept
    assert total() == 11 and day_bar(hour) == 7  # the hour once, from its hourly row
    assert total(since=now - dt.timedelta(hours=4)) == 11  # minute rows (minute-exact windows)
    assert counters.rollup_hours(now=now) == 0  # nothing new ended
    # The day view reads the hourly row: with the minute rows gone the bar is unchanged, the minutes are not.
    TaskCounter.objects.filter(resolution=60, bucket__lt=hour + dt.timedelta(hours=1)).delete()
    assert day_bar(hour) == 7 and total() == 11
    assert total(since=now - dt.timedelta(hours=4)) == 4
    # The current hour stays in minute rows until it has ended FOLD_MARGIN ago.
    assert not TaskCounter.objects.filter(resolution=3600, bucket__gte=now - dt.timedelta(hours=1)).exists()
    later = now.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1) + counters.FOLD_MARGIN
    counters.rollup_hours(now=later)
    assert TaskCounter.objects.get(resolution=3600, bucket=now.replace(minute=0, second=0, microsecond=0)).count == 4
    assert total() == 11


@pytest.mark.django_db
def test_truncate_resets_status_counts():
    services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(3)])
    counters.compact()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE process_tracker")
    assert counted_status() == {} == row_status_counts()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_counters_agree_with_rows_after_a_real_cluster_with_retries_rescues_and_cancels(processes):
    services.task_create_many([services.TaskSpec("test.noop", {"i": i}) for i in range(300)])
    services.task_create_many([services.TaskSpec("test.batched", {"bad": i % 10 == 0}) for i in range(50)])
    services.task_create_many([services.TaskSpec("test.flaky", {"succeed_on": 3}) for _ in range(5)])
    services.task_create_many([services.TaskSpec("test.kill", {"kill_on": [1], "delay": 0.1}) for _ in range(2)])
    later = services.task_create_many(
        [services.TaskSpec("test.noop", {}, run_after=timezone.now() + dt.timedelta(hours=1)) for _ in range(4)]
    )
    processes.start(
        ["manage.py", "qcluster"],
        TRACKER_LEASE_SECONDS=2,
        TRACKER_RESCUE_EVERY_SECONDS=0.5,
        TRACKER_POLL_SECONDS=0.2,
        Q_WORKERS=2,
    )
    unfinished = ProcessTracker.objects.exclude(status__in=("COMPLETED", "FAILED", "CANCELLED"))
    services.task_bulk_run(
        action="cancel",
        filter={"status": "PENDING", "task_type": "test.noop", "created_after": later[0].created_at.isoformat()},
        by="op",
    )
    wait_until(lambda: not unfinished.exists(), 120, interval=0.3, message="every task finished")
    assert Transition.objects.filter(by_worker="rescuer").exists()  # the killed workers' tasks were rescued
    counters.compact()
    assert counted_status() == row_status_counts()
    assert finished_by_type_outcome() == expected_finished()
    assert finished_by_type_outcome()[("test.noop", "cancelled")] == 4
