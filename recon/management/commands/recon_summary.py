"""Prints the recon summary (the figures of GET /api/recon-engine/summary/)."""

from django.core.management.base import BaseCommand
from rich.console import Console
from rich.table import Table

from recon.reports import summary
from recon.serializers import money_str


class Command(BaseCommand):
    help = ("Counts by status, match rate (per day and account), amounts per currency and ageing of open expected "
            "entries and of the review queue.")

    def add_arguments(self, parser):
        parser.add_argument("--merchant", default=None)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, merchant, **opts):
        data = summary(merchant)
        if opts["json"]:
            import json as _json

            self.stdout.write(_json.dumps(data, default=str, indent=2))
            return
        console = Console(file=self.stdout._out if hasattr(self.stdout, "_out") else None)
        table = Table("figure", "value", title=f"Recon summary ({merchant or 'all merchants'})")
        for status, n in data["staging_entries"]["by_status"].items():
            table.add_row(f"staging entries {status}", str(n))
        for status, n in data["transactions"]["by_status"].items():
            table.add_row(f"transactions {status}", str(n))
        for currency, figures in data["amounts_by_currency"].items():
            table.add_row(f"amount {currency}", f"{money_str(figures['total'])} ({figures['count']} entries)")
        rate = data["match_rate"]
        table.add_row("match rate", "-" if rate is None else f"{rate:.1%}")
        table.add_row("entries whose task failed/cancelled", str(data["failed_or_cancelled_tasks"]))
        for bucket, n in data["open_expected_ageing"].items():
            table.add_row(f"open expected {bucket}", str(n))
        for bucket, n in data["review_queue_ageing"].items():
            table.add_row(f"review queue {bucket}", str(n))
        for row in data["match_rates"]["by_account"]:
            table.add_row(f"match rate {row['account_name']}", f"{row['match_rate']:.1%} of {row['decided']}")
        for row in data["match_rates"]["by_day"]:
            table.add_row(f"match rate {row['date']}", f"{row['match_rate']:.1%} of {row['decided']}")
        console.print(table)
