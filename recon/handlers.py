"""Tracker task type PROCESS_STAGING_ENTRY: every claimed batch of these tasks goes to the engine as one batch
(`engine.staging_entries_process`); a single task is a batch of one. Registered in `ReconConfig.ready`."""

from recon import engine
from tracker.errors import PermanentError
from tracker.registry import RunContext, TaskHandler


class StagingEntryHandler(TaskHandler):
    """Processes staging entries of both modes through the one engine."""

    task_type = engine.TASK_TYPE
    # Lower runs first: job slices and timers (priority 100) go before the backlog of staging entries, so a
    # CSV import (the producer) is not queued behind the processing of the rows it has just written.
    priority = 150

    def validate(self, task) -> None:
        if not task.payload.get("staging_entry_id"):
            raise PermanentError("payload has no staging_entry_id")

    def run(self, task, ctx: RunContext) -> None:
        """Runs inside the worker's transaction: a batch of one."""
        self.run_batch([task], ctx)

    def run_batch(self, tasks: list, ctx: RunContext) -> None:
        """All of `tasks` in the worker's transaction. Raises (the worker then runs each task on its own) when a
        payload is bad or an entry is missing."""
        for task in tasks:
            self.validate(task)
        engine.staging_entries_process(
            items=[engine.WorkItem(t.payload["staging_entry_id"], t.task_id) for t in tasks], by=ctx.worker_id
        )
