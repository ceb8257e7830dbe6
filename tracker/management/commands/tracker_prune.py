from django.conf import settings
from django.core.management.base import BaseCommand

from tracker import services


class Command(BaseCommand):
    help = "Delete finished tasks (and their audit rows) older than the retention."

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=settings.TRACKER["RETENTION_DAYS"],
            help="Retention in days (default: TRACKER_RETENTION_DAYS).",
        )

    def handle(self, *args, **options):
        deleted = services.task_prune(older_than_days=options["days"])
        self.stdout.write(f"pruned {deleted} finished tasks older than {options['days']} days")
