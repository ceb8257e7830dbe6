from django.core.management.base import BaseCommand

from tracker import services


class Command(BaseCommand):
    help = "Move tasks whose lease expired (dead or hung workers) to RETRY, or FAILED when out of attempts."

    def handle(self, *args, **options):
        result = services.task_rescue()
        self.stdout.write(f"rescued: {result['retried']} to RETRY, {result['failed']} to FAILED")
