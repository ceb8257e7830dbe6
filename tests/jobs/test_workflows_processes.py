"""Workflow runs under real qcluster processes: a SIGKILLed cluster costs one step attempt; two consumers
finishing the two parents of a join at the same moment enqueue it once."""

import os
import signal
import time

import pytest

from jobs import services
from jobs.models import JobEvent, WorkflowStep
from tests.conftest import wait_until
from tests.jobs.conftest import reload
from tracker.models import ProcessTracker, Transition

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CLUSTER = {
    "TRACKER_LEASE_SECONDS": 3,
    "TRACKER_RESCUE_EVERY_SECONDS": 1,
    "TRACKER_POLL_SECONDS": 0.2,
    "JOBS_MODULES": "tests.jobs.workflow_defs",
    "Q_WORKERS": 2,
    "TRACKER_CONSUMERS": 2,
}


def step(job, name) -> WorkflowStep:
    return WorkflowStep.objects.get(job_id=job.pk, name=name)


def effects(job) -> list[str]:
    return [
        e.data["effect"]
        for e in JobEvent.objects.filter(job_id=job.pk, kind="log").order_by("id")
        if "effect" in e.data
    ]


def test_sigkill_during_a_step_reruns_only_that_step_and_applies_no_effect_twice(processes):
    job = services.job_create(job_type="test.effects", params={"sleep": 1.5})
    cluster = processes.start(["manage.py", "qcluster"], **CLUSTER)
    wait_until(
        lambda: step(job, "second").state == "RUNNING" and effects(job) == ["first", "second"],
        60,
        interval=0.02,
        message="the second step running, its effect applied",
    )
    os.killpg(cluster.pid, signal.SIGKILL)
    cluster.wait(timeout=10)
    second = step(job, "second")
    assert second.state == "RUNNING" and second.attempts == 1
    assert ProcessTracker.objects.get(pk=second.task_id).status == "PROCESSING"

    processes.start(["manage.py", "qcluster"], **CLUSTER)
    wait_until(lambda: reload(job).state == "COMPLETED", 90, message="the run to complete after the restart")
    job = reload(job)
    assert step(job, "first").attempts == 1  # not run again
    assert step(job, "second").attempts == 2  # the killed attempt counted
    assert job.result == {"second": {"step": "second", "attempt": 2}}
    assert effects(job) == ["first", "second"]  # each effect once
    rescued = Transition.objects.filter(object_id=str(second.task_id), from_status="PROCESSING", to_status="RETRY")
    assert rescued.filter(by_worker="rescuer").exists()
    interrupted = Transition.objects.filter(object_id=str(second.pk), from_status="RUNNING", to_status="RUNNING")
    assert interrupted.count() == 1


def test_two_consumers_finishing_both_parents_of_a_join_at_once_enqueue_it_once(processes):
    # One step thread per consumer: a claim takes one step task, so the two parents run on the two consumers
    # (with more threads one consumer may take both and close them in one transaction).
    processes.start(["manage.py", "qcluster"], **CLUSTER, JOBS_WORKFLOW_STEP_THREADS=1)
    runs = []
    for i in range(6):
        runs.append(services.job_create(job_type="test.join_race", params={"finish_at": time.time() + 8 + 0.5 * i}))
    wait_until(lambda: all(reload(r).state == "COMPLETED" for r in runs), 90, message="every run to complete")
    gaps = []
    for run in runs:
        join = step(run, "join")
        assert join.attempts == 1
        assert ProcessTracker.objects.filter(task_type="WORKFLOW_STEP", payload__step_id=join.pk).count() == 1
        left, right = step(run, "left"), step(run, "right")
        claimed_by = {
            Transition.objects.filter(object_id=str(s.task_id), to_status="PROCESSING").get().by_worker
            for s in (left, right)
        }
        assert len(claimed_by) == 2  # the two parents ran on two consumers at the same time
        gaps.append(abs(left.result["returned_at"] - right.result["returned_at"]))
    # Most pairs returned within 20 ms of each other, so their finishing transactions met at the run's lock.
    assert sum(gap < 0.02 for gap in gaps) >= 3, gaps
