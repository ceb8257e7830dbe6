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
