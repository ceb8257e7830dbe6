from django.core.management.base import BaseCommand
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tracker.models import DUE_STATUSES, ProcessTracker
from tracker.worker import Worker, make_worker_id


class Command(BaseCommand):
    help = "Process every due task now, in this process, with a progress bar."

    def add_arguments(self, parser):
        parser.add_argument("--seconds", type=float, default=3600, help="Time budget (default 3600).")
        parser.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args, **options):
        due = ProcessTracker.objects.filter(status__in=DUE_STATUSES).count()
        worker = Worker(make_worker_id("drain"), batch_size=options["batch_size"])
        columns = [
            TextColumn("draining"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ok {task.fields[ok]} failed {task.fields[failed]}"),
        ]
        with Progress(*columns, disable=not self.stdout.isatty()) as progress:
            bar = progress.add_task("drain", total=due or None, ok=0, failed=0)
            totals = worker.drain(
                budget_seconds=options["seconds"],
                on_batch=lambda batch, t: progress.update(bar, completed=t.processed, ok=t.succeeded, failed=t.failed),
            )
        self.stdout.write(
            f"processed {totals.processed}: {totals.succeeded} completed, {totals.failed} moved to RETRY or FAILED"
        )
