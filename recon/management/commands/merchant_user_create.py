"""Links a user (created if needed) to a merchant with a role."""

from django.core.management.base import BaseCommand, CommandError

from recon import services
from recon.errors import ReconError


class Command(BaseCommand):
    help = "merchant_user_create <username> --merchant <merchant_id> [--role viewer|operator] [--password PW]"

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--merchant", required=True)
        parser.add_argument("--role", default="viewer", choices=["viewer", "operator"])
        parser.add_argument("--password", default=None)

    def handle(self, *args, username, merchant, role, password, **opts):
        try:
            membership = services.merchant_user_create(
                username=username, merchant_id=merchant, role=role, password=password
            )
        except ReconError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"{membership.user.username} is {membership.role} of {membership.merchant_id}")
