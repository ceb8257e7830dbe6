"""List jobs, newest first."""

from django.core.management.base import BaseCommand
from rich.console import Console
from rich.table import Table

from jobs.models import Job, JobState


class Command(BaseCommand):
    help = "List jobs (newest first)."

    def add_arguments(self, parser):
        parser.add_argument("--state", choices=JobState.values)
        parser.add_argument("--type", dest="job_type")
        parser.add_argument("--merchant")
        parser.add_argument("--limit", type=int, default=30)

    def handle(self, *args, **opts):
        qs = Job.objects.order_by("-created_at")
        if opts["state"]:
            qs = qs.filter(state=opts["state"])
        if opts["job_type"]:
            qs = qs.filter(job_type=opts["job_type"])
        if opts["merchant"]:
            qs = qs.filter(merchant_id=opts["merchant"])
        table = Table("job_id", "type", "state", "progress", "step", "merchant", "created", "error")
        for job in qs[: opts["limit"]]:
            table.add_row(
                str(job.pk),
                job.job_type,
                job.state,
                f"{job.progress}%",
                job.step,
                job.merchant_id or "-",
                job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                (job.error or "")[:60],
            )
        Console(file=self.stdout, width=200).print(table)
