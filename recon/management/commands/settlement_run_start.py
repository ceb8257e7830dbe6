"""Start a `recon.settlement_run` from two CSV files on disk (follow it with `jobs_list` / the admin)."""

import datetime as dt
import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from config.errors import AppError
from recon.models import Account, Merchant
from recon.workflows import settlement_run_start


class Command(BaseCommand):
    help = ("settlement_run_start --merchant acme --start 2026-11-01 --end 2026-11-30 --provider-account <id> "
            "--provider-file provider.csv --bank-account <id> --bank-file bank.csv")

    def add_arguments(self, parser):
        parser.add_argument("--merchant", required=True)
        parser.add_argument("--start", required=True, type=dt.date.fromisoformat, help="First date (YYYY-MM-DD).")
        parser.add_argument("--end", required=True, type=dt.date.fromisoformat, help="Last date (YYYY-MM-DD).")
        parser.add_argument("--provider-account", required=True)
        parser.add_argument("--provider-file", required=True)
        parser.add_argument("--bank-account", required=True)
        parser.add_argument("--bank-file", required=True)
        parser.add_argument("--idempotency-key", default=None)

    def handle(self, *args, **opts):
        merchant = Merchant.objects.filter(pk=opts["merchant"]).first()
        if merchant is None:
            raise CommandError(f"No merchant {opts['merchant']!r}.")
        accounts = {}
        for side in ("provider", "bank"):
            try:
                accounts[side] = Account.objects.get(pk=opts[f"{side}_account"], merchant=merchant)
            except (Account.DoesNotExist, ValueError, ValidationError):
                raise CommandError(f"No account {opts[f'{side}_account']!r} of merchant {merchant.pk}.") from None
        try:
            with open(opts["provider_file"], "rb") as provider, open(opts["bank_file"], "rb") as bank:
                run = settlement_run_start(merchant=merchant, start_date=opts["start"], end_date=opts["end"],
                                           provider_account=accounts["provider"], provider_file=provider,
                                           bank_account=accounts["bank"], bank_file=bank,
                                           idempotency_key=opts["idempotency_key"])
        except OSError as exc:
            raise CommandError(str(exc)) from None
        except AppError as exc:
            raise CommandError(f"{exc.message} {json.dumps(exc.details) if exc.details else ''}".strip()) from None
        self.stdout.write(json.dumps({"job_id": str(run.pk), "state": run.state}))
