"""Imports a CSV file of staging entries in-process, streaming it (any size), with a progress bar and the
per-row error report. With `--job` the file (CSV or a bank statement: camt.052/053/054, MT940/942, OFX, BAI2) is
stored in the database and imported by a `recon.import_file` job run by the cluster (like an API upload); the
command follows the job's progress and prints its report."""

import os
import time
import uuid

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from recon import statements
from recon.ingest import CHUNK_ROWS, InvalidCsvError, ingest_csv
from recon.models import Account


class Command(BaseCommand):
    help = ("Import staging entries from a CSV file (order_id, amount, currency, transaction_date, type), or with "
            "--job from any supported file (CSV, camt, MT940/942, OFX, BAI2).")

    def add_arguments(self, parser):
        parser.add_argument("csv_path")
        parser.add_argument("--account", required=True, help="account_id")
        parser.add_argument("--mode", required=True, choices=["TRANSACTION", "CONFIRMATION"])
        parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
        parser.add_argument("--max-errors-shown", type=int, default=50)
        parser.add_argument("--job", action="store_true",
                            help="Run as a recon.import_file job (needs a running qcluster) and follow it.")
        parser.add_argument("--format", default="auto", dest="file_format",
                            help="auto (from the content), csv, camt053, mt940, ofx or bai2.")
        parser.add_argument("--force", action="store_true", help="With --job: import even if this file content "
                                                                  "was uploaded to the account before.")
        parser.add_argument("--no-wait", action="store_true", help="With --job: print the job id and exit.")

    def handle(self, *args, csv_path, account, mode, chunk_rows, max_errors_shown, job=False, force=False,
               no_wait=False, file_format="auto", **opts):
        try:
            acct = Account.objects.get(pk=uuid.UUID(account))
        except (Account.DoesNotExist, ValueError):
            raise CommandError(f"Account {account} not found.") from None
        if not os.path.isfile(csv_path):
            raise CommandError(f"No such file: {csv_path}")
        console = Console(file=self.stdout._out if hasattr(self.stdout, "_out") else None)
        if not job:
            with open(csv_path, "rb") as handle:
                detected = file_format if file_format != "auto" else statements.detect_format(handle.read(65536))
            if detected != "csv":
                raise CommandError(f"{csv_path} is {detected or 'of no supported format'}: statements import with "
                                   "--job (they are stored so a broken file writes nothing).")
        if job:
            report = self._run_as_job(console, acct, csv_path, mode, chunk_rows, force, no_wait, file_format)
            if report is None:
                return
        else:
            report = self._run_here(console, acct, csv_path, mode, chunk_rows)
        self._print_report(console, report, max_errors_shown)

    def _run_as_job(self, console, acct, csv_path, mode, chunk_rows, force, no_wait, file_format) -> dict | None:
        from config.errors import AppError
        from jobs.models import Job, JobState
        from recon.uploads import file_import_start

        try:
            with open(csv_path, "rb") as handle:
                job = file_import_start(account=acct, file=handle, name=os.path.basename(csv_path),
                                        processing_mode=mode, file_format_name=file_format, force=force,
                                        chunk_rows=chunk_rows)
        except AppError as exc:
            raise CommandError(exc.message) from None
        console.print(f"job {job.pk} created ({job.job_type}, {job.params['format']}); follow it at "
                      f"/admin/jobs/job/{job.pk}/change/")
        if no_wait:
            return None
        terminal = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
        with Progress(TextColumn("[bold]{task.fields[state]}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                      TextColumn("{task.fields[step]}"), console=console) as progress:
            bar = progress.add_task("job", total=100, state="CREATED", step="")
            while True:
                job = Job.objects.get(pk=job.pk)
                progress.update(bar, completed=job.progress, state=job.state, step=job.step)
                if job.state in terminal:
                    break
                time.sleep(0.5)
        if job.state != JobState.COMPLETED:
            raise CommandError(f"job {job.pk} ended {job.state}: {job.error}")
        return job.result

    def _run_here(self, console, acct, csv_path, mode, chunk_rows) -> dict:
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
        return report

    def _print_report(self, console, report, max_errors_shown) -> None:
        console.print(f"[green]{report['successful_ingestions']} staging entries created[/], "
                      f"[red]{report['failed_ingestions']} rows failed[/]"
                      + (f", {report['duplicates_skipped']} already imported skipped"
                         if report.get("duplicates_skipped") else ""))
        for s in report.get("statements") or []:
            console.print(f"statement {s['statement_id']}: {s['lines']} lines, opening {s['opening_balance']}, "
                          f"closing {s['closing_balance']}" + ("" if s["balanced"] is not False
                                                                else " [red](lines do not add up)[/]"))
        if report["errors"]:
            table = Table("row", "problems", "data", title="Rows that failed")
            for error in report["errors"][:max_errors_shown]:
                table.add_row(str(error["row_number"]), error["error_details"],
                              ", ".join(f"{k}={v}" for k, v in error["row_data"].items()))
            console.print(table)
            if len(report["errors"]) > max_errors_shown:
                console.print(f"... and {report['failed_ingestions'] - max_errors_shown} more")
