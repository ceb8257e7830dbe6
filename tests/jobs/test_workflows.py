"""Workflow runs on PostgreSQL: readiness, results, retries, permanent errors, conditions, pause/resume/cancel,
run and step retries, version pinning, signals and timers in a step, idempotent start."""

import time

import pytest

from jobs import registry, services
from jobs.models import JobEvent, WorkflowStep
from jobs.workflows import declare, engine
from tests.conftest import wait_until
from tests.jobs import workflow_defs
from tests.jobs.conftest import drain, reload
from tracker.audit import history
from tracker.models import ProcessTracker

pytestmark = pytest.mark.django_db(transaction=True)


def steps(job) -> dict[str, WorkflowStep]:
    return {s.name: s for s in WorkflowStep.objects.filter(job_id=job.pk)}


def states(job) -> dict[str, str]:
    return {n: s.state for n, s in steps(job).items()}


def test_diamond_runs_to_completion_with_parents_results_passed_down():
    job = services.job_create(job_type="jobs.diamond", params={})
    assert job.workflow_version == 1
    assert states(job) == {"start": "QUEUED", "left": "PENDING", "right": "PENDING", "join": "PENDING"}
    drain()
    job = reload(job)
    assert job.state == "COMPLETED", job.error
    assert job.progress == 100
    assert job.result == {"join": {"step": "join", "parents": ["left", "right"]}}
    s = steps(job)
    assert s["left"].result == {"step": "left", "parents": ["start"]}
    assert s["start"].result == {"step": "start", "parents": []}
    assert all(x.attempts == 1 and x.state == "COMPLETED" for x in s.values())
    # Audit rows of every step transition, and step events before the terminal state event.
    assert [t.to_status for t in history(s["join"])] == ["QUEUED", "RUNNING", "COMPLETED"]
    kinds = list(JobEvent.objects.filter(job_id=job.pk).order_by("id").values_list("kind", "data"))
    last_step = max(i for i, (k, _) in enumerate(kinds) if k == "step")
    terminal = [i for i, (k, d) in enumerate(kinds) if k == "state" and d["state"] == "COMPLETED"]
    assert terminal and last_step < terminal[0]
    assert {"name", "state", "attempts", "error"} <= set(kinds[last_step][1])
    # One task per step attempt, all finished.
    tasks = ProcessTracker.objects.filter(task_type="WORKFLOW_STEP", payload__job_id=str(job.pk))
    assert tasks.count() == 4 and set(tasks.values_list("status", flat=True)) == {"COMPLETED"}


def test_a_run_completes_with_the_engines_statements_unprepared(settings):
    """PREPARED_STATEMENTS off (a transaction pooler without prepared statements): the same run, through Django's
    client-side cursors."""
    settings.TRACKER = {**settings.TRACKER, "PREPARED_STATEMENTS": 0}
    job = services.job_create(job_type="jobs.diamond", params={})
    drain()
    assert reload(job).state == "COMPLETED"
    assert set(states(job).values()) == {"COMPLETED"}


def test_join_is_enqueued_only_when_both_parents_are_done():
    job = services.job_create(job_type="jobs.diamond", params={})
    from tracker.worker import Worker

    worker = Worker("w1", batch_size=1)
    worker.run_once()  # start
    assert states(job) == {"start": "COMPLETED", "left": "QUEUED", "right": "QUEUED", "join": "PENDING"}
    worker.run_once()  # one of left/right
    st = states(job)
    assert st["join"] == "PENDING" and sorted([st["left"], st["right"]]) == ["COMPLETED", "QUEUED"]
    worker.run_once()
    assert states(job)["join"] == "QUEUED"
    assert ProcessTracker.objects.filter(task_type="WORKFLOW_STEP", payload__step_id=steps(job)["join"].pk).count() == 1


def test_a_claim_takes_at_most_as_many_step_tasks_as_the_consumer_has_step_threads(settings):
    settings.JOBS = {"WORKFLOW_STEP_THREADS": 2}
    jobs = [services.job_create(job_type="jobs.diamond", params={}) for _ in range(3)]
    from tracker import services as tracker_services

    claimed = tracker_services.task_claim(worker_id="w", limit=50)
    assert [t.task_type for t in claimed] == ["WORKFLOW_STEP"] * 2
    assert len(tracker_services.task_claim(worker_id="w", limit=1)) == 1  # and never more than the claim's limit
    assert len(jobs) == 3


def test_a_claimed_batch_of_steps_runs_at_once_and_one_transaction_closes_what_ends_together():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tracker.worker import Worker

    job = services.job_create(job_type="test.barrier", params={"parties": 4})
    worker = Worker("w1")
    try:
        with CaptureQueriesContext(connection) as queries:
            worker.run_once()  # claims p0..p3: they meet at the barrier only if they all run at once
        st = states(job)
        assert [st[f"p{i}"] for i in range(4)] == ["COMPLETED"] * 4, steps(job)["p0"].error
        assert st["end"] == "QUEUED"
        # The consumer's own statements: the claim, one begin and at most four finishes (no per-step begin).
        begins = [q for q in queries.captured_queries if "FOR UPDATE" in q["sql"] and "jobs_job" in q["sql"]]
        assert 2 <= len(begins) <= 5
        worker.run_once()
        assert reload(job).state == "COMPLETED"
    finally:
        worker.close()


def test_a_lost_lease_in_a_finishing_batch_closes_only_the_held_attempts():
    from tracker import services as tracker_services
    from tracker.registry import RunContext

    jobs = [services.job_create(job_type="jobs.diamond", params={}) for _ in range(2)]
    tasks = tracker_services.task_claim(worker_id="w1", limit=10)
    attempts = engine.steps_begin_many(tasks=tasks, worker_id="w1")
    assert len(attempts) == 2
    for attempt in attempts:
        attempt.call(RunContext(worker_id="w1", heartbeat=lambda: None))
    lost = attempts[0]
    ProcessTracker.objects.filter(task_id=lost.task.task_id).update(locked_by="someone-else")  # taken over
    engine.steps_finish_many(attempts=attempts, worker_id="w1")
    assert lost.outcome == "superseded" and attempts[1].outcome == "complete"
    lost_job = next(j for j in jobs if str(j.pk) == lost.job_id)
    kept_job = next(j for j in jobs if str(j.pk) == attempts[1].job_id)
    assert states(lost_job)["start"] == "RUNNING"  # untouched: the task's new holder decides
    assert ProcessTracker.objects.get(task_id=lost.task.task_id).status == "PROCESSING"
    assert states(kept_job) == {"start": "COMPLETED", "left": "QUEUED", "right": "QUEUED", "join": "PENDING"}
    assert ProcessTracker.objects.get(task_id=attempts[1].task.task_id).status == "COMPLETED"


def test_failed_attempts_retry_with_backoff_then_complete():
    job = services.job_create(job_type="test.retries", params={"fail": 2})
    deadline = time.monotonic() + 10
    while reload(job).state not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
        drain()
        time.sleep(0.05)
    job = reload(job)
    assert job.state == "COMPLETED"
    a = steps(job)["a"]
    assert a.attempts == 3 and a.result == {"attempt": 3}
    assert [t.to_status for t in history(a)] == [
        "QUEUED",
        "RUNNING",
        "RETRY",
        "RUNNING",
        "RETRY",
        "RUNNING",
        "COMPLETED",
    ]


def test_attempts_run_out_then_run_fails_naming_the_step_and_retry_runs_failed_steps_only():
    job = services.job_create(job_type="jobs.diamond", params={"fail_attempts": {"right": 2}, "max_attempts": 2})
    deadline = time.monotonic() + 15
    while reload(job).state not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
        drain()
        time.sleep(0.1)
    job = reload(job)
    assert job.state == "FAILED"
    assert "right" in job.error
    assert states(job) == {"start": "COMPLETED", "left": "COMPLETED", "right": "FAILED", "join": "PENDING"}
    assert steps(job)["right"].attempts == 2
    left_done = steps(job)["left"].finished_at

    job = services.job_retry(job_id=job.pk)
    assert job.state in ("CREATED", "RUNNING")
    drain()
    job = reload(job)
    assert job.state == "COMPLETED", job.error
    s = steps(job)
    assert s["right"].attempts == 3 and s["left"].attempts == 1 and s["left"].finished_at == left_done
    assert s["join"].result == {"step": "join", "parents": ["left", "right"]}


def test_permanent_error_fails_at_once_and_independent_branches_finish():
    job = services.job_create(job_type="test.permanent", params={})
    drain()
    job = reload(job)
    assert job.state == "FAILED"
    assert states(job) == {"a": "COMPLETED", "bad": "FAILED", "after_bad": "PENDING", "side": "COMPLETED"}
    assert steps(job)["bad"].attempts == 1
    assert "PermanentStepError" in steps(job)["bad"].error and "Traceback" in steps(job)["bad"].error_details
    assert job.error.startswith("Steps failed: bad")


def test_condition_false_skips_the_step_and_its_dependents_may_still_run():
    job = services.job_create(job_type="test.condition", params={"go": False})
    drain()
    job = reload(job)
    assert job.state == "COMPLETED"
    assert states(job) == {"gate": "COMPLETED", "yes": "SKIPPED", "after_yes": "COMPLETED", "end": "COMPLETED"}
    assert steps(job)["end"].result["parents"] == {
        "after_yes": {"step": "after_yes", "parents": {}, "n": 0},
        "gate": {"go": False},
    }
    job2 = services.job_create(job_type="test.condition", params={"go": True})
    drain()
    assert states(job2)["yes"] == "COMPLETED"


def test_a_condition_that_raises_skips_its_step_with_why_and_the_run_completes():
    job = services.job_create(job_type="test.condition_raises", params={"go": True})
    drain()
    assert reload(job).state == "COMPLETED"
    assert states(job) == {"gate": "COMPLETED", "broken": "SKIPPED", "after": "COMPLETED"}
    broken = steps(job)["broken"]
    assert broken.error == "condition raised KeyError: 'missing'"
    assert [(t.from_status, t.to_status, t.reason) for t in history(broken)] == [
        ("PENDING", "SKIPPED", "condition raised KeyError: 'missing'")
    ]
    events = [d for k, d in JobEvent.objects.filter(job_id=job.pk).values_list("kind", "data") if k == "step"]
    assert {"name": "broken", "state": "SKIPPED", "attempts": 0, "error": broken.error} in events


def test_pause_stops_new_steps_and_resume_continues():
    job = services.job_create(job_type="test.slow", params={"sleep": 0.05})
    services.job_pause(job_id=job.pk)
    drain()
    assert states(job) == {"one": "QUEUED", "two": "PENDING"}
    assert reload(job).state == "PAUSED"
    services.job_resume(job_id=job.pk)
    drain()
    job = reload(job)
    assert job.state == "COMPLETED"
    assert steps(job)["one"].attempts == 1


def test_cancel_cancels_pending_steps_and_stops_the_running_one():
    import threading

    job = services.job_create(job_type="test.slow", params={"sleep": 5})
    t = threading.Thread(target=drain, args=(10,))
    t.start()
    deadline = time.monotonic() + 5
    while states(job)["one"] != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    services.job_cancel(job_id=job.pk)
    t.join()
    assert time.monotonic() - started < 3  # stopped at its next check, not after 5 s
    job = reload(job)
    assert job.state == "CANCELLED"
    assert states(job) == {"one": "CANCELLED", "two": "CANCELLED"}


def test_step_retry_reruns_the_step_and_everything_downstream():
    job = services.job_create(job_type="jobs.diamond", params={"fail_attempts": {"join": 1}, "max_attempts": 1})
    drain()
    job = reload(job)
    assert job.state == "FAILED" and states(job)["join"] == "FAILED"
    with pytest.raises(services.JobNotFound):
        engine.workflow_step_retry(job_id=job.pk, name="nope")
    job = engine.workflow_step_retry(job_id=job.pk, name="left")
    assert job.state in ("CREATED", "RUNNING")
    drain()
    job = reload(job)
    assert job.state == "COMPLETED"
    s = steps(job)
    assert (s["start"].attempts, s["left"].attempts, s["right"].attempts, s["join"].attempts) == (1, 2, 1, 2)
    from jobs.errors import JobStateConflict

    with pytest.raises(JobStateConflict):
        engine.workflow_step_retry(job_id=job.pk, name="left")  # not FAILED


def test_retry_from_start_runs_every_step_again():
    job = services.job_create(job_type="test.permanent", params={})
    drain()
    services.job_retry(job_id=job.pk, from_start=True)
    drain()
    assert {n: s.attempts for n, s in steps(job).items()} == {"a": 2, "bad": 2, "after_bad": 0, "side": 2}


def test_signal_and_timer_in_steps_release_the_worker():
    # The nap is long enough not to come due inside the first drain on a slow machine.
    job = services.job_create(job_type="test.signals", params={"nap": 3})
    drain()
    job = reload(job)
    assert states(job) == {"prepare": "COMPLETED", "approval": "WAITING", "nap": "WAITING", "close": "PENDING"}
    assert job.state == "WAITING"
    assert not ProcessTracker.objects.filter(status="PROCESSING").exists()
    wait_until(lambda: drain(1) or states(job)["nap"] == "COMPLETED", 15, message="the nap's timer")
    assert reload(job).state == "WAITING"
    services.job_signal(job_id=job.pk, name="approve", payload={"by": "me"})
    assert reload(job).state == "RUNNING"
    drain()
    job = reload(job)
    assert job.state == "COMPLETED"
    assert steps(job)["approval"].result == {"decision": "approve", "payload": {"by": "me"}}
    assert states(job)["close"] == "COMPLETED"


def test_signal_sent_before_the_step_waits_is_delivered():
    job = services.job_create(job_type="test.signals", params={"nap": 0})
    services.job_signal(job_id=job.pk, name="reject")
    drain()
    job = reload(job)
    assert job.state == "COMPLETED"
    assert states(job)["close"] == "SKIPPED"


def test_a_run_keeps_its_version_and_a_missing_version_fails_clearly(monkeypatch):
    job = services.job_create(job_type="test.versioned", params={})
    assert job.workflow_version == 2 and set(states(job)) == {"new_a", "new_b"}
    old = services.job_create(job_type="jobs.diamond", params={})
    old.workflow_version = 1
    from jobs.models import Job

    Job.objects.filter(pk=old.pk).update(job_type="test.versioned")
    WorkflowStep.objects.filter(job_id=old.pk).delete()
    engine.run_create_steps(job=reload(old), wf=declare.get_version("test.versioned", 1))
    # The old run's step is queued by the ensure path and runs version 1's code.
    from django.db import transaction

    with transaction.atomic():
        engine.run_ensure(job=Job.objects.select_for_update().get(pk=old.pk))
    drain()
    assert reload(old).state == "COMPLETED" and set(reload(old).result) == {"old"}
    assert reload(job).state == "COMPLETED"
    monkeypatch.setitem(declare._versions["test.versioned"], 1, None)
    monkeypatch.delitem(declare._versions["test.versioned"], 1)
    gone = services.job_create(job_type="test.versioned", params={})
    Job.objects.filter(pk=gone.pk).update(workflow_version=1)
    drain()
    gone = reload(gone)
    assert gone.state == "FAILED" and "version 1 is not declared" in gone.error


def test_step_timeout_is_a_retryable_failure():
    job = services.job_create(job_type="test.timeout", params={"sleep": 1})
    deadline = time.monotonic() + 10
    while reload(job).state not in ("COMPLETED", "FAILED") and time.monotonic() < deadline:
        drain()
    job = reload(job)
    assert job.state == "FAILED" and steps(job)["slow"].attempts == 2
    assert "timeout" in steps(job)["slow"].error


def test_declaration_errors_are_clear():
    e = declare.WorkflowDeclarationError
    f = workflow_defs.echo
    with pytest.raises(e, match="cycle"):
        declare.workflow(
            "bad.cycle", steps=[declare.Step("a", f, depends_on=["b"]), declare.Step("b", f, depends_on=["a"])]
        )
    with pytest.raises(e, match="unknown step"):
        declare.workflow("bad.parent", steps=[declare.Step("a", f, depends_on=["zzz"])])
    with pytest.raises(e, match="duplicate step name"):
        declare.workflow("bad.dup", steps=[declare.Step("a", f), declare.Step("a", f)])
    with pytest.raises(e, match="declared twice"):
        declare.register(declare.workflow("test.versioned", version=1, steps=[declare.Step("a", f)]))
    assert "bad.cycle" not in registry.all_types()
    assert [s.name for s in declare.get_version("test.versioned", 1).steps] == ["old"]


def test_idempotent_start_returns_the_existing_run():
    from django.contrib.auth.models import User

    from jobs.errors import IdempotencyConflict

    user = User.objects.create_user("idem", is_staff=True)
    a = services.job_create(job_type="jobs.diamond", params={}, owner=user, idempotency_key="k1")
    b = services.job_create(job_type="jobs.diamond", params={"sleep_seconds": 0}, owner=user, idempotency_key="k1")
    assert a.pk == b.pk and b.replayed and not a.replayed
    with pytest.raises(IdempotencyConflict):
        services.job_create(job_type="jobs.diamond", params={"sleep_seconds": 1}, owner=user, idempotency_key="k1")
    assert WorkflowStep.objects.filter(job_id=a.pk).count() == 4


def test_commands_list_graphs_start_with_a_bar_per_step_and_print_stats():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("workflows_list", stdout=out)
    text = out.getvalue()
    assert "jobs.diamond  v1" in text and "join   <- left, right" in text
    out = StringIO()
    call_command(
        "jobs_start", "jobs.diamond", "--param", "sleep_seconds=0", "--run-here", "--timeout", "30", stdout=out
    )
    text = out.getvalue()
    assert '"state": "COMPLETED"' in text and "left" in text and "join" in text
    out = StringIO()
    call_command("workflows_stats", "--workflow", "jobs.diamond", stdout=out)
    assert "COMPLETED 1" in out.getvalue() and "jobs.diamond" in out.getvalue()
