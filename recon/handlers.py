"""Tracker task type PROCESS_STAGING_ENTRY: `decide` routes each task to the transaction-creation handler
(TRANSACTION mode) or the expected-entry-matching handler (CONFIRMATION mode)."""

from recon import engine
from recon.models import ProcessingMode, StagingEntry
from tracker.errors import PermanentError
from tracker.registry import TaskHandler, register


class _StagingEntryHandler(TaskHandler):
    task_type = engine.TASK_TYPE
    # Lower runs first: job slices and timers (priority 100) go before the backlog of staging entries, so a
    # CSV import (the producer) is not queued behind the processing of the rows it has just written.
    priority = 150

    def validate(self, task) -> None:
        if not task.payload.get("staging_entry_id"):
            raise PermanentError("payload has no staging_entry_id")

    def _batch_ids(self, tasks) -> list:
        """The batch's staging entry ids; raises (so the worker runs the tasks one by one) when a payload is
        bad (the batch functions raise when an entry is missing)."""
        for task in tasks:
            self.validate(task)
        return [task.payload["staging_entry_id"] for task in tasks]

    def run(self, task, ctx) -> None:
        """Runs inside the worker's transaction; outcome errors end on the entry, others retry the task."""
        entry = engine.staging_entry_process(staging_entry_id=task.payload["staging_entry_id"],
                                             task_id=task.task_id, by=ctx.worker_id)
        if entry is None:
            raise PermanentError(f"staging entry {task.payload['staging_entry_id']} does not exist")


class TransactionCreationHandler(_StagingEntryHandler):
    """TRANSACTION mode: creates version 1 of a transaction with its expectation."""

    def run_batch(self, tasks, ctx) -> None:
        """Set-based: a constant number of queries per batch, same outcomes as `run` in claim order. Raises
        (so the worker falls back to `run` per task) when a payload is bad or an entry is missing."""
        ids = self._batch_ids(tasks)
        engine.transaction_entries_process_batch(staging_entry_ids=ids, task_ids=[t.task_id for t in tasks],
                                                 by=ctx.worker_id)


class ExpectationMatchingHandler(_StagingEntryHandler):
    """CONFIRMATION mode: matches the entry against expected entries and fulfils one."""

    def run_batch(self, tasks, ctx) -> None:
        """Set-based: a constant number of queries per batch, same outcomes as `run` in claim order. Raises
        (so the worker falls back to `run` per task) when a payload is bad, an entry is missing, or the batch
        holds a case left to the per-entry path (`engine.BatchFallback`)."""
        ids = self._batch_ids(tasks)
        engine.confirmation_entries_process_batch(staging_entry_ids=ids, task_ids=[t.task_id for t in tasks],
                                                  by=ctx.worker_id)


_transaction_handler = TransactionCreationHandler()
_matching_handler = ExpectationMatchingHandler()


@register
class ProcessStagingEntry(_StagingEntryHandler):
    """Registered type; `decide` picks the variant from the entry's processing mode."""

    def decide(self, task) -> TaskHandler:
        mode = task.payload.get("mode") or (StagingEntry.objects.filter(pk=task.payload.get("staging_entry_id"))
                                            .values_list("processing_mode", flat=True).first())
        return _matching_handler if mode == ProcessingMode.CONFIRMATION else _transaction_handler
