from django.core.management.base import BaseCommand

from tracker.management.commands._select import act, add_selection_arguments


class Command(BaseCommand):
    help = "Retry FAILED or CANCELLED tasks (fresh attempts), by id or by --status/--type."

    def add_arguments(self, parser):
        add_selection_arguments(parser)

    def handle(self, *args, **options):
        act(self, options, "retry")
