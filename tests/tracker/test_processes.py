"""Real processes: concurrent consumers, and a qcluster killed with SIGKILL."""

import os
import signal

import pytest
from django.db.models import Count

from tests.conftest import wait_until
from tests.tracker.handlers import effects
from tracker import services
from tracker.models import ProcessTracker, Transition

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAST_RESCUE = {"TRACKER_LEASE_SECONDS": 2, "TRACKER_RESCUE_EVERY_SECONDS": 0.5, "TRACKER_POLL_SECONDS": 0.2}


def test_concurrent_consumers_in_separate_processes_never_claim_the_same_task(processes):
    tasks = services.task_create_many([services.TaskSpec("test.noop", {"i": i}) for i in range(600)])
    drainers = [processes.start(["manage.py", "tracker_drain", "--batch-size", "7", "--seconds", "60"])
                for _ in range(4)]
    for proc in drainers:
        assert proc.wait(timeout=120) == 0, processes.output()
    assert ProcessTracker.objects.filter(status="COMPLETED").count() == 600
    claims = (Transition.objects.filter(to_status="PROCESSING").values("object_id").annotate(n=Count("id"))
              .order_by())
    assert len(claims) == 600 and {c["n"] for c in claims} == {1}
    effect_counts = Transition.objects.filter(to_status="EFFECT").values("object_id").annotate(n=Count("id"))
    assert len(effect_counts) == 600 and {c["n"] for c in effect_counts} == {1}
    # Work was really shared between the processes.
    assert ProcessTracker.objects.values("locked_by").distinct().count() >= 2
    assert {str(t.task_id) for t in tasks} == {c["object_id"] for c in claims}


def _kill_group(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_killed_cluster_task_is_rescued_and_completes_exactly_once(processes):
    task = services.task_create(task_type="test.sleep", payload={"seconds": 3})
    cluster = processes.start(["manage.py", "qcluster"], **FAST_RESCUE)
    wait_until(lambda: ProcessTracker.objects.get(pk=task.pk).status == "PROCESSING", 30, message="task started")
    _kill_group(cluster)  # SIGKILL the whole cluster mid-task
    assert ProcessTracker.objects.get(pk=task.pk).status == "PROCESSING"
    processes.start(["manage.py", "qcluster"], **FAST_RESCUE)
    wait_until(lambda: ProcessTracker.objects.get(pk=task.pk).status == "COMPLETED", 60, message="completion")
    task.refresh_from_db()
    assert task.attempts == 2 and effects(task.task_id) == 1
    history = [(t.from_status, t.to_status) for t in Transition.objects.filter(object_id=str(task.pk))
               if t.to_status != "EFFECT"]
    assert ("PROCESSING", "RETRY") in history and history[-1] == ("PROCESSING", "COMPLETED")


def test_task_that_keeps_killing_its_worker_fails_after_max_attempts(processes):
    """django-q2 alone would redeliver such a task forever; the tracker counts the attempts."""
    task = services.task_create(task_type="test.kill", payload={})
    assert task.max_attempts == 3
    processes.start(["manage.py", "qcluster"], **FAST_RESCUE)
    wait_until(lambda: ProcessTracker.objects.get(pk=task.pk).status == "FAILED", 90, message="failure")
    task.refresh_from_db()
    assert task.attempts == 3 and effects(task.task_id) == 0
    assert "(rescued)" in task.last_error  # its worker died: seen by pid at once, or by the lease
    # The cluster survived its killed workers and still processes new work.
    fresh = services.task_create(task_type="test.noop", payload={})
    wait_until(lambda: ProcessTracker.objects.get(pk=fresh.pk).status == "COMPLETED", 60, message="new work")
