from django.core.management.base import BaseCommand

from tracker.management.commands._select import act, add_selection_arguments


class Command(BaseCommand):
    help = "Cancel PENDING or RETRY tasks, by id or by --status/--type."

    def add_arguments(self, parser):
        add_selection_arguments(parser)

    def handle(self, *args, **options):
        act(self, options, "cancel")
