"""Recon workflows (jobs.workflows; docs/workflows.md).

`recon.settlement_run`: for one merchant and a date range, import the provider's file and the bank's file (two
parallel steps, the import code of `recon.import_csv`), wait until their staging entries are processed, build the
unmatched/ageing report and the period summary (in parallel), wait for `approve` or `reject`, then close the period
on approval through the period-close service. Started by `settlement_run_start` (admin form, command
`settlement_run_start`) or `POST /api/jobs/` with uploads stored before."""

import datetime as dt

from django import forms
from django.db import transaction
from django.utils import timezone
from rest_framework import serializers

from jobs.workflows import Step, workflow
from recon import reports, services
from recon.jobs import import_upload
from recon.models import Account, Merchant, ProcessingMode, StagingEntry, StagingStatus, Upload
from tracker.models import FINISHED_STATUSES, ProcessTracker

SETTLEMENT_RUN = "recon.settlement_run"
WAIT_POLL_SECONDS = 2.0


class SettlementRunParams(serializers.Serializer):
    merchant_id = serializers.CharField(max_length=64)
    start_date = serializers.DateField()
    end_date = serializers.DateField()
    provider_account_id = serializers.UUIDField()
    provider_upload_id = serializers.UUIDField()
    provider_processing_mode = serializers.ChoiceField(
        choices=ProcessingMode.values, default=ProcessingMode.TRANSACTION
    )
    bank_account_id = serializers.UUIDField()
    bank_upload_id = serializers.UUIDField()
    bank_processing_mode = serializers.ChoiceField(choices=ProcessingMode.values, default=ProcessingMode.CONFIRMATION)
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")

    def validate(self, attrs):
        if not Merchant.objects.filter(pk=attrs["merchant_id"]).exists():
            raise serializers.ValidationError({"merchant_id": ["Unknown merchant."]})
        if attrs["end_date"] < attrs["start_date"]:
            raise serializers.ValidationError({"end_date": ["Must not be before start_date."]})
        for side in ("provider", "bank"):
            account_id, upload_id = attrs[f"{side}_account_id"], attrs[f"{side}_upload_id"]
            if not Account.objects.filter(pk=account_id, merchant_id=attrs["merchant_id"]).exists():
                raise serializers.ValidationError({f"{side}_account_id": ["No such account for this merchant."]})
            if not Upload.objects.filter(pk=upload_id, account_id=account_id).exists():
                raise serializers.ValidationError({f"{side}_upload_id": ["No such upload for this account."]})
        return attrs


def _import(side: str):
    def run(ctx):
        p = ctx.params
        report = import_upload(
            ctx,
            {
                "account_id": p[f"{side}_account_id"],
                "upload_id": p[f"{side}_upload_id"],
                "processing_mode": p[f"{side}_processing_mode"],
            },
        )
        if report is None:
            return None
        return {
            "upload_id": p[f"{side}_upload_id"],
            "account_id": p[f"{side}_account_id"],
            "successful_ingestions": report["successful_ingestions"],
            "failed_ingestions": report["failed_ingestions"],
            "errors": report["errors"][:20],
        }

    run.__name__ = f"import_{side}"
    return run


def _run_entries(ctx):
    """Staging entries the run's two imports created (their accounts, their file names, since the run began)."""
    uploads = Upload.objects.filter(pk__in=[ctx.params["provider_upload_id"], ctx.params["bank_upload_id"]])
    started = min((u.created_at for u in uploads), default=timezone.now())
    return StagingEntry.objects.filter(
        account_id__in=[u.account_id for u in uploads],
        metadata__source_file__in=[u.name for u in uploads],
        created_at__gte=started,
    )


def wait_processed(ctx):
    """Waits (a durable timer between checks: no worker held) until no imported entry is PENDING with its
    task still to run; returns the entries by status."""
    entries = _run_entries(ctx)
    unfinished = (
        entries.filter(status=StagingStatus.PENDING)
        .exclude(task_id__in=ProcessTracker.objects.filter(status__in=FINISHED_STATUSES).values("task_id"))
        .count()
    )
    if unfinished:
        ctx.log(f"{unfinished} imported entries still to process")
        ctx.sleep_until(timezone.now() + dt.timedelta(seconds=WAIT_POLL_SECONDS))
    by_status = {s: 0 for s in StagingStatus.values}
    for status in entries.values_list("status", flat=True):
        by_status[status] += 1
    return {"by_status": by_status, "total": sum(by_status.values())}


def unmatched_report(ctx):
    """The unmatched/ageing report of the merchant (open expectations and the review queue by age)."""
    summary = reports.summary(merchant_id=ctx.params["merchant_id"])
    keep = (
        "match_rate",
        "failed_or_cancelled_tasks",
        "open_expected_ageing",
        "review_queue_ageing",
        "staging_entries",
        "transactions",
    )
    return {k: summary[k] for k in keep if k in summary}


def period_summary(ctx):
    p = ctx.params
    return reports.period_summary(
        merchant_id=p["merchant_id"],
        start_date=dt.date.fromisoformat(p["start_date"]),
        end_date=dt.date.fromisoformat(p["end_date"]),
    )


def approval(ctx):
    """Waits for `approve` or `reject` (POST /api/jobs/{id}/signal/, the admin, `jobs_signal`)."""
    ctx.log("waiting for approve or reject")
    name, payload = ctx.wait_for_any("approve", "reject")
    from jobs.models import JobSignal

    signal = JobSignal.objects.filter(job_id=ctx.job_id, name=name).select_related("sent_by").order_by("-id").first()
    who = signal.sent_by.get_username() if signal is not None and signal.sent_by else ""
    return {"decision": name, "by": who, "payload": payload}


def close(ctx):
    """Closes the period on approval (through the period-close service), or records the rejection. The result
    links to what the run produced."""
    p = ctx.params
    decision = ctx.parents["approval"]
    produced = {
        "uploads": [p["provider_upload_id"], p["bank_upload_id"]],
        "admin_url": f"/admin/jobs/job/{ctx.job_id}/change/",
        "summary": ctx.parents["period_summary"],
    }
    if decision["decision"] != "approve":
        return {"status": "rejected", "rejected_by": decision["by"], **produced}
    if "period_id" not in ctx.checkpoint_data:
        from django.contrib.auth import get_user_model

        user_model = get_user_model()
        by = (user_model.objects.filter(username=decision["by"]).first() if decision["by"] else None) or (
            user_model.objects.filter(pk=ctx.owner_id).first() if ctx.owner_id else None
        )
        with transaction.atomic():
            period = services.period_close(
                merchant=Merchant.objects.get(pk=p["merchant_id"]),
                start_date=dt.date.fromisoformat(p["start_date"]),
                end_date=dt.date.fromisoformat(p["end_date"]),
                by=by,
                reason=p.get("reason") or f"settlement run {ctx.job_id}",
            )
            ctx.checkpoint({"period_id": period.pk})
        ctx.log(f"period closed (id {period.pk})", period_id=period.pk)
    period_id = ctx.checkpoint_data["period_id"]
    return {
        "status": "closed",
        "period_id": period_id,
        "approved_by": decision["by"],
        "period_url": f"/admin/recon/closedperiod/{period_id}/change/",
        **produced,
    }


class SettlementRunForm(forms.Form):
    """The admin's start form: the merchant, the dates, the two accounts and their files."""

    merchant = forms.ModelChoiceField(queryset=Merchant.objects.none())
    start_date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    end_date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    provider_account = forms.ModelChoiceField(queryset=Account.objects.none())
    provider_file = forms.FileField(help_text="The provider's report (CSV, or a statement format).")
    bank_account = forms.ModelChoiceField(queryset=Account.objects.none())
    bank_file = forms.FileField(help_text="The bank statement (camt.052/053/054, MT940/942, OFX, BAI2 or CSV).")
    reason = forms.CharField(required=False, max_length=500)

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        from recon.access import visible_tenants

        self.user = user
        tenants = visible_tenants(user)
        merchants = Merchant.objects.all() if tenants is None else Merchant.objects.filter(pk__in=tenants)
        self.fields["merchant"].queryset = merchants.order_by("pk")
        accounts = (
            Account.objects.filter(merchant__in=merchants)
            .select_related("merchant")
            .order_by("merchant_id", "account_name")
        )
        self.fields["provider_account"].queryset = accounts
        self.fields["bank_account"].queryset = accounts

    def clean(self):
        data = super().clean()
        from recon.access import can_operate

        merchant = data.get("merchant")
        if merchant is not None:
            if not can_operate(self.user, merchant.pk):
                raise forms.ValidationError("Only operators of this merchant may start a settlement run.")
            for side in ("provider_account", "bank_account"):
                if data.get(side) is not None and data[side].merchant_id != merchant.pk:
                    self.add_error(side, "Pick an account of the chosen merchant.")
        if data.get("start_date") and data.get("end_date") and data["end_date"] < data["start_date"]:
            self.add_error("end_date", "Must not be before the start date.")
        return data

    def start(self, *, by):
        d = self.cleaned_data
        return settlement_run_start(
            merchant=d["merchant"],
            start_date=d["start_date"],
            end_date=d["end_date"],
            provider_account=d["provider_account"],
            provider_file=d["provider_file"],
            bank_account=d["bank_account"],
            bank_file=d["bank_file"],
            by=by,
            reason=d.get("reason") or "",
        )


SETTLEMENT_RUN_V1 = workflow(
    SETTLEMENT_RUN,
    version=1,
    params=SettlementRunParams,
    start_form=SettlementRunForm,
    description="Daily settlement: import provider and bank files, wait for matching, report, summary, "
    "approval, close the period.",
    steps=[
        Step("import_provider", _import("provider"), max_attempts=3),
        Step("import_bank", _import("bank"), max_attempts=3),
        Step("wait_processed", wait_processed, depends_on=["import_provider", "import_bank"], max_attempts=3),
        Step("unmatched_report", unmatched_report, depends_on=["wait_processed"]),
        Step("period_summary", period_summary, depends_on=["wait_processed"]),
        Step("approval", approval, depends_on=["unmatched_report", "period_summary"], max_attempts=1),
        Step("close", close, depends_on=["approval", "period_summary"], max_attempts=3),
    ],
)


def settlement_run_start(
    *,
    merchant: Merchant,
    start_date: dt.date,
    end_date: dt.date,
    provider_account: Account,
    provider_file,
    bank_account: Account,
    bank_file,
    by=None,
    idempotency_key: str | None = None,
    reason: str = "",
):
    """Stores the provider's and the bank's files (CSV or a bank statement, recognised from the content as a file
    import does: 400 for a bad or unreadable file, 413 above the limit) and starts a `recon.settlement_run` of
    `merchant`, in one transaction (a bad file writes nothing). Assumes the caller may operate the merchant.
    Returns the run (a Job)."""
    from jobs import services as job_services
    from recon.uploads import _file_chunks, file_checks, upload_store

    for file in (provider_file, bank_file):
        file_checks(file=file, name=getattr(file, "name", "") or "")
    with transaction.atomic():
        provider = upload_store(
            account=provider_account,
            name=provider_file.name.rsplit("/", 1)[-1],
            source=_file_chunks(provider_file),
            created_by=by,
        )
        bank = upload_store(
            account=bank_account, name=bank_file.name.rsplit("/", 1)[-1], source=_file_chunks(bank_file), created_by=by
        )
        params = {
            "merchant_id": merchant.pk,
            "start_date": start_date.isoformat(),
            "end_date": end_date.isoformat(),
            "provider_account_id": str(provider_account.pk),
            "provider_upload_id": str(provider.pk),
            "bank_account_id": str(bank_account.pk),
            "bank_upload_id": str(bank.pk),
            "reason": reason,
        }
        return job_services.job_create(
            job_type=SETTLEMENT_RUN, params=params, owner=by, merchant_id=merchant.pk, idempotency_key=idempotency_key
        )
