import pytest

from tests.tracker.handlers import effects
from tracker import services
from tracker.models import ProcessTracker
from tracker.worker import Worker


@pytest.mark.django_db
def test_noop_task_completes_once():
    task = services.task_create(task_type="test.noop", payload={})
    totals = Worker("w1").drain(budget_seconds=5)
    task.refresh_from_db()
    assert (totals.processed, totals.succeeded, totals.failed) == (1, 1, 0)
    assert task.status == "COMPLETED" and task.attempts == 1
    assert effects(task.task_id) == 1


@pytest.mark.django_db
def test_permanent_error_fails_and_rolls_back_effect():
    task = services.task_create(task_type="test.permanent", payload={})
    Worker("w1").drain(budget_seconds=5)
    task.refresh_from_db()
    assert task.status == "FAILED"
    assert "this cannot work" in task.last_error and "Traceback" in task.error_details
    assert effects(task.task_id) == 0
    assert ProcessTracker.objects.count() == 1


@pytest.mark.django_db
def test_claim_size_adapts(settings):
    """Full, fast batches double the claim size up to BATCH_MAX; a batch that falls back to one-by-one halves
    it. Every task still runs exactly once."""
    settings.TRACKER = {**settings.TRACKER, "BATCH_SIZE": 4, "BATCH_MAX": 16, "BATCH_TARGET_SECONDS": 30}
    services.task_create_many([services.TaskSpec("test.batched", {"i": i}) for i in range(60)])
    worker = Worker("w1")
    sizes = []
    worker.drain(budget_seconds=30, on_batch=lambda batch, totals: sizes.append((batch.processed, worker.batch_size)))
    assert sizes[:4] == [(4, 8), (8, 16), (16, 16), (16, 16)]
    assert ProcessTracker.objects.filter(task_type="test.batched", status="COMPLETED").count() == 60

    bad = services.task_create_many([services.TaskSpec("test.batched", {"i": i, "bad": i == 0}) for i in range(16)])
    worker.run_once()
    assert worker.batch_size == 8  # the batch raised, its tasks ran one by one
    assert ProcessTracker.objects.get(pk=bad[0].pk).status == "FAILED"
    assert sum(effects(t.task_id) for t in bad) == 15


@pytest.mark.django_db
def test_slow_batches_halve_the_claim_size(settings):
    settings.TRACKER = {**settings.TRACKER, "BATCH_SIZE": 4, "BATCH_MAX": 16, "BATCH_TARGET_SECONDS": 0.05}
    services.task_create_many([services.TaskSpec("test.sleep", {"seconds": 0.04}) for _ in range(4)])
    worker = Worker("w1")
    worker.run_once()  # four tasks of 40 ms: over twice the 50 ms target
    assert worker.batch_size == 2
    assert ProcessTracker.objects.filter(task_type="test.sleep", status="COMPLETED").count() == 4
