"""Cancel jobs by id."""

from django.core.management.base import BaseCommand, CommandError

from config.errors import AppError
from jobs import services
from jobs.management.commands._common import BY, get_job


class Command(BaseCommand):
    help = "Cancel jobs (CREATED, RUNNING, WAITING or PAUSED)."

    def add_arguments(self, parser):
        parser.add_argument("job_ids", nargs="+")
        parser.add_argument("--reason", default="cancelled from the command line")

    def handle(self, *args, **opts):
        failed = 0
        for job_id in opts["job_ids"]:
            try:
                job = services.job_cancel(job_id=get_job(job_id).pk, by=BY, reason=opts["reason"])
                self.stdout.write(f"{job.pk} CANCELLED")
            except (AppError, CommandError) as exc:
                failed += 1
                self.stderr.write(f"{job_id}: {getattr(exc, 'message', exc)}")
        if failed:
            raise CommandError(f"{failed} job(s) not cancelled.")
