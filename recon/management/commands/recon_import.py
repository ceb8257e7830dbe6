"""Imports a CSV file of staging entries in-process, streaming it (any size), with a progress bar and the
per-row error report."""

import os
import uuid

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from recon.ingest import InvalidCsvError, ingest_csv
from recon.models import Account


class Command(BaseCommand):
    help = "Import staging entries from a CSV file (order_id, amount, currency, transaction_date, type)."

    def add_arguments(self, parser):
        parser.add_argument("csv_path")
        parser.add_argument("--account", required=True, help="account_id")
        parser.add_argument("--mode", required=True, choices=["TRANSACTION", "CONFIRMATION"])
        parser.add_argument("--chunk-rows", type=int, default=5000)
        parser.add_argument("--max-errors-shown", type=int, default=50)

    def handle(self, *args, csv_path, account, mode, chunk_rows, max_errors_shown, **opts):
        try:
            acct = Account.objects.get(pk=uuid.UUID(account))
        except (Account.DoesNotExist, ValueError):
            raise CommandError(f"Account {account} not found.") from None
        if not os.path.isfile(csv_path):
            raise CommandError(f"No such file: {csv_path}")
        console = Console(file=self.stdout._out if hasattr(self.stdout, "_out") else None)
        size = os.path.getsize(csv_path) or 1
        with open(csv_path, encoding="utf-8-sig", newline="") as handle, Progress(
                TextColumn("[bold]importing"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("{task.fields[rows]} rows"), TimeRemainingColumn(), console=console) as progress:
            bar = progress.add_task("import", total=size, rows=0)
            read = 0

            def lines():
                nonlocal read
                for line in handle:
                    read += len(line.encode())
                    yield line

            def on_chunk(rows_done, report):
                progress.update(bar, completed=read, rows=rows_done)

            try:
                report = ingest_csv(account=acct, lines=lines(), processing_mode=mode,
                                    source_file=os.path.basename(csv_path), chunk_rows=chunk_rows, on_chunk=on_chunk)
            except InvalidCsvError as exc:
                raise CommandError(exc.message) from None
            progress.update(bar, completed=size)
        console.print(f"[green]{report['successful_ingestions']} staging entries created[/], "
                      f"[red]{report['failed_ingestions']} rows failed[/]")
        if report["errors"]:
            table = Table("row", "problems", "data", title="Rows that failed")
            for error in report["errors"][:max_errors_shown]:
                table.add_row(str(error["row_number"]), error["error_details"],
                              ", ".join(f"{k}={v}" for k, v in error["row_data"].items()))
            console.print(table)
            if len(report["errors"]) > max_errors_shown:
                console.print(f"... and {report['failed_ingestions'] - max_errors_shown} more")
