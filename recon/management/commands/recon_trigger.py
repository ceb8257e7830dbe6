"""Processes every due task now, in-process, and prints the counts."""

from django.core.management.base import BaseCommand

from recon import services


class Command(BaseCommand):
    help = "Drain due tracker tasks in-process (like POST /api/recon-engine/trigger/)."

    def add_arguments(self, parser):
        parser.add_argument("--timeout-ms", type=int, default=60000)

    def handle(self, *args, timeout_ms, **opts):
        result = services.engine_trigger(timeout_ms=timeout_ms)
        self.stdout.write(
            "processed={processed} succeeded={succeeded} failed={failed} duration_ms={duration_ms}".format(**result)
        )
