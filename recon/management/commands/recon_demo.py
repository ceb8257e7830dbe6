"""Creates a demo merchant (accounts, rules, an operator user), feeds sample payment and bank data through
the engine in-process and prints what got matched, posted and sent to review. Finally, unless one is already
under way, it creates a `recon.close_period` job for last month that the cluster runs until it waits for an
operator's approve/reject. Idempotent: running it again creates nothing new. Needs no running cluster."""

import datetime as dt
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from recon import services
from recon.models import Account, ClosedPeriod, Merchant, ReconRule, StagingEntry
from recon.serializers import money_str

MERCHANT = "demo"
DAY = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)

# (key, account, mode, side, amount, currency, order_id, day offset)
PAYMENTS = [
    (f"pay-{n}", "payments", "TRANSACTION", "DEBIT", amt, "USD", f"ord-{n}", 0)
    for n, amt in [
        (1001, "120.00"),
        (1002, "75.50"),
        (1003, "19.99"),
        (1004, "250.00"),
        (1005, "42.10"),
        (1006, "310.00"),
        (1007, "88.00"),
    ]
]
BANK = [
    ("bank-1001", "bank", "CONFIRMATION", "CREDIT", "120.00", "USD", "ord-1001", 1),  # exact match
    ("bank-1002", "bank", "CONFIRMATION", "CREDIT", "75.50", "USD", "ord-1002", 2),  # exact match
    ("bank-1003", "bank", "CONFIRMATION", "CREDIT", "19.79", "USD", "ord-1003", 1),  # within tolerance
    ("bank-1004", "bank", "CONFIRMATION", "CREDIT", "240.00", "USD", "ord-1004", 1),  # amount mismatch
    ("bank-1005", "bank", "CONFIRMATION", "CREDIT", "42.10", "USD", "ord-1005", 12),  # outside date window
    ("bank-9999", "bank", "CONFIRMATION", "CREDIT", "13.00", "USD", "ord-9999", 1),  # no expectation
    ("bank-1006", "bank", "CONFIRMATION", "CREDIT", "310.00", "EUR", "ord-1006", 1),  # currency mismatch
    ("bank-1008", "bank", "CONFIRMATION", "CREDIT", "64.00", "USD", "ord-1008", 0),  # arrives before payment
]
LATE_PAYMENTS = [("pay-1008", "payments", "TRANSACTION", "DEBIT", "64.00", "USD", "ord-1008", 0)]
LEFT_PENDING = [
    ("pay-1009", "payments", "TRANSACTION", "DEBIT", "15.00", "USD", "ord-1009", 0),
    ("bank-1007", "bank", "CONFIRMATION", "CREDIT", "88.00", "USD", "ord-1007", 1),
]


class Command(BaseCommand):
    help = "Create demo data and process it in-process (no cluster needed)."

    def add_arguments(self, parser):
        parser.add_argument("--no-process", action="store_true", help="Only create data; leave it PENDING.")

    def handle(self, *args, no_process=False, **opts):
        accounts = self._setup()
        created = self._feed(accounts, PAYMENTS + BANK)
        if not no_process:
            self._drain()
            created += self._feed(accounts, LATE_PAYMENTS)
            self._drain()
        created += self._feed(accounts, LEFT_PENDING)
        self.stdout.write(f"{created} new staging entries (0 means the demo data existed already).")
        self._report()
        self._close_period_job()

    def _close_period_job(self) -> None:
        """A `recon.close_period` job for last month, left for the cluster (it runs to WAITING), unless one is
        under way already or the period is closed."""
        from django.contrib.auth import get_user_model

        from jobs import services as job_services
        from jobs.models import ACTIVE_STATES, Job

        end = timezone.now().date().replace(day=1) - dt.timedelta(days=1)
        start = end.replace(day=1)
        job = Job.objects.filter(job_type="recon.close_period", merchant_id=MERCHANT, state__in=ACTIVE_STATES).first()
        if (
            job is None
            and ClosedPeriod.objects.filter(
                merchant_id=MERCHANT, start_date=start, end_date=end, reopened_at__isnull=True
            ).exists()
        ):
            self.stdout.write(f"period {start}..{end} of '{MERCHANT}' is closed already")
            return
        if job is None:
            owner = get_user_model().objects.filter(username="demo_operator").first()
            job = job_services.job_create(
                job_type="recon.close_period",
                owner=owner,
                merchant_id=MERCHANT,
                params={
                    "merchant_id": MERCHANT,
                    "start_date": start.isoformat(),
                    "end_date": end.isoformat(),
                    "reason": "demo month-end close",
                },
            )
            self.stdout.write(f"close-period job {job.pk} created for {start}..{end}")
        self.stdout.write(
            f"close-period job {job.pk} [{job.state}]: the cluster runs it until it waits; approve "
            f"or reject it in the admin (/admin/jobs/job/{job.pk}/change/) or with "
            f'POST /api/jobs/{job.pk}/signal/ {{"name": "approve"}}'
        )

    def _setup(self) -> dict:
        with transaction.atomic():
            merchant = Merchant.objects.filter(pk=MERCHANT).first() or services.merchant_create(
                merchant_id=MERCHANT, merchant_name="Demo Shop"
            )
            accounts = {}
            for key, name, kind in [
                ("payments", "Payments receivable", "DEBIT_NORMAL"),
                ("bank", "Bank USD", "CREDIT_NORMAL"),
                ("diff", "Payment differences", "DEBIT_NORMAL"),
            ]:
                accounts[key] = Account.objects.filter(
                    merchant=merchant, account_name=name
                ).first() or services.account_create(
                    merchant=merchant,
                    account_name=name,
                    account_type=kind,
                    currency="USD",
                    initial_balance="1000.00" if key == "bank" else "0",
                )
            if not ReconRule.objects.filter(account_one=accounts["payments"]).exists():
                services.recon_rule_create(
                    merchant=merchant,
                    account_one_id=accounts["payments"].pk,
                    account_two_id=accounts["bank"].pk,
                    amount_tolerance="0.50",
                    date_window_days=5,
                    difference_account_id=accounts["diff"].pk,
                )
            services.merchant_user_create(
                username="demo_operator", merchant_id=MERCHANT, role="operator", password="demo"
            )
        self.stdout.write(
            "Demo merchant 'demo': accounts Payments receivable -> Bank USD (rule: tolerance 0.50, "
            "5-day window); operator user demo_operator / demo"
        )
        return accounts

    def _feed(self, accounts, rows) -> int:
        created = 0
        for key, account, mode, side, amount, currency, order_id, offset in rows:
            _, new = services.staging_entry_create(
                account=accounts[account],
                entry_type=side,
                amount=Decimal(amount),
                currency=currency,
                effective_date=DAY + dt.timedelta(days=offset),
                processing_mode=mode,
                metadata={"order_id": order_id, "source": "recon_demo"},
                idempotency_key=f"demo-{key}",
            )
            created += new
        return created

    def _drain(self) -> None:
        result = services.engine_trigger(timeout_ms=60000, worker_id="recon_demo")
        self.stdout.write("engine: processed={processed} succeeded={succeeded} failed={failed}".format(**result))

    def _report(self) -> None:
        entries = (
            StagingEntry.objects.filter(account__merchant_id=MERCHANT).select_related("account").order_by("created_at")
        )
        groups: dict[str, list[str]] = {
            "matched (Fulfilled)": [],
            "posted (NewTransactionGenerated)": [],
            "sent to review": [],
            "still PENDING": [],
            "ignored": [],
        }
        for e in entries:
            label = f"{e.metadata.get('order_id')} {e.entry_type} {money_str(e.amount)} {e.currency} on {e.account.account_name}"
            if e.status == "PROCESSED":
                key = (
                    "matched (Fulfilled)"
                    if e.metadata.get("match_type") == "Fulfilled"
                    else "posted (NewTransactionGenerated)"
                )
                groups[key].append(label)
            elif e.status == "NEEDS_MANUAL_REVIEW":
                groups["sent to review"].append(f"{label}: {e.metadata.get('error_type')} - {e.metadata.get('error')}")
            elif e.status == "PENDING":
                groups["still PENDING"].append(label)
            else:
                groups["ignored"].append(label)
        for title, items in groups.items():
            self.stdout.write(f"{title}: {len(items)}")
            for item in items:
                self.stdout.write(f"  - {item}")
