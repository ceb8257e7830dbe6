"""Task types and functions the benchmarks run (loaded by the cluster through TRACKER_TASK_MODULES)."""

from tracker.registry import TaskHandler


class Noop(TaskHandler):
    """Does nothing: measures the tracker's own overhead (claim, complete, audit)."""

    task_type = "bench.noop"
    batched = True

    def run(self, task, ctx):
        pass


def noop(*args, **kwargs):
    """django-q2 alone: one async_task per item."""
    return None


TASK_HANDLERS = (Noop,)
