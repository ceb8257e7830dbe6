"""Send a named signal to a job."""

from django.core.management.base import BaseCommand, CommandError

from config.errors import AppError
from jobs import services
from jobs.management.commands._common import BY, get_job, parse_json


class Command(BaseCommand):
    help = 'Send a signal to a job: jobs_signal <job_id> approve --payload \'{"note": "ok"}\''

    def add_arguments(self, parser):
        parser.add_argument("job_id")
        parser.add_argument("name")
        parser.add_argument("--payload", help="A JSON value (an object by convention).")

    def handle(self, *args, **opts):
        job = get_job(opts["job_id"])
        try:
            services.job_signal(
                job_id=job.pk, name=opts["name"], payload=parse_json(opts["payload"], "--payload"), by=BY
            )
        except AppError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"signal {opts['name']!r} sent to {job.pk} ({get_job(job.pk).state})")
