"""Task types used by the tracker tests (loaded through TRACKER_TASK_MODULES)."""

import os
import signal
import time

from django.contrib.contenttypes.models import ContentType

from tracker.errors import PermanentError, RetryableError
from tracker.models import ProcessTracker, Transition
from tracker.registry import TaskHandler


def record_effect(task) -> None:
    """A visible side effect in the handler's transaction: one audit row marked EFFECT."""
    Transition.objects.create(
        content_type=ContentType.objects.get_for_model(ProcessTracker),
        object_id=str(task.task_id),
        from_status="",
        to_status="EFFECT",
        reason="effect",
    )


def effects(task_id) -> int:
    return Transition.objects.filter(object_id=str(task_id), to_status="EFFECT").count()


class Noop(TaskHandler):
    task_type = "test.noop"
    batched = True

    def run(self, task, ctx):
        record_effect(task)


class Permanent(TaskHandler):
    task_type = "test.permanent"

    def run(self, task, ctx):
        record_effect(task)
        raise PermanentError("this cannot work")


class Flaky(TaskHandler):
    """Fails with a retryable error until attempt `payload.succeed_on`."""

    task_type = "test.flaky"
    backoff_base = 0.01
    backoff_cap = 0.05

    def run(self, task, ctx):
        record_effect(task)
        if task.attempts < task.payload.get("succeed_on", 10**6):
            raise RetryableError(f"attempt {task.attempts} failed")


class Sleepy(TaskHandler):
    task_type = "test.sleep"

    def run(self, task, ctx):
        time.sleep(float(task.payload.get("seconds", 1)))
        record_effect(task)


class KillOnce(TaskHandler):
    """SIGKILLs its own worker process on the attempts listed in payload.kill_on (all attempts if absent)."""

    task_type = "test.kill"
    backoff_base = 0.1
    backoff_cap = 0.2
    max_attempts = 3

    def run(self, task, ctx):
        kill_on = task.payload.get("kill_on")
        if kill_on is None or task.attempts in kill_on:
            time.sleep(float(task.payload.get("delay", 0.2)))
            os.kill(os.getpid(), signal.SIGKILL)
        record_effect(task)


class Batched(TaskHandler):
    """Set-based: the whole batch in one go; a payload with "bad" makes the batch raise (then each task
    runs alone and only the bad one fails)."""

    task_type = "test.batched"

    def run_batch(self, tasks, ctx):
        for task in tasks:
            self.run(task, ctx)

    def run(self, task, ctx):
        if task.payload.get("bad"):
            raise PermanentError("bad entry")
        record_effect(task)


class LongLease(TaskHandler):
    """A type with a lease of its own (the claim and the heartbeat give it 600 s, not LEASE_SECONDS)."""

    task_type = "test.long_lease"
    lease_seconds = 600

    def run(self, task, ctx):
        record_effect(task)


TASK_HANDLERS = (Noop, Permanent, Flaky, Sleepy, KillOnce, Batched, LongLease)
