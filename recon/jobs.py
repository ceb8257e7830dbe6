"""Recon job types (jobs.registry imports this module on first use).

- `recon.import_file` (and `recon.import_csv`, the name of imports started before statements were read): streams
  a stored upload (recon.uploads) through `recon.ingest` (`ingest_csv`; a statement file is parsed once, whole,
  into a spool of ready rows on the worker's disk (`statement_spool`), so a broken file writes nothing, then
  `ingest_statement` writes the spool's rows). Each chunk of rows commits together with the job's checkpoint
  `{"rows_done", "report"}`, so a crash, a pause or the end of a slice resumes at the next row without
  duplicates (a statement's spool is parsed again when it is gone). Result: the ingest report with `format` and
  `statements`.
- `recon.close_period`: computes the period's summary, waits for an operator's `approve` or `reject` signal,
  then closes the period (`recon.services.period_close`, which refuses while entries of the period are open,
  unless forced with a reason) or completes with `{"status": "rejected"}`. The console's Approve goes through
  a confirmation page (`admin:recon_closedperiod_approve`) that shows what is still open."""

import datetime as dt

from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework import serializers

from jobs.registry import job_type
from jobs.runtime import JobContext
from recon import access, errors, ingest, reports, services, statements
from recon.ingest import CHUNK_ROWS, ingest_csv, ingest_statement, mapping_problems
from recon.models import Account, Merchant, ProcessingMode, Upload
from recon.uploads import open_bytes, open_lines, upload_format


class ImportFileParams(serializers.Serializer):
    account_id = serializers.UUIDField()
    upload_id = serializers.UUIDField()
    processing_mode = serializers.ChoiceField(choices=ProcessingMode.values)
    format = serializers.ChoiceField(choices=statements.FORMATS, default="csv")
    mapping = serializers.JSONField(required=False, help_text="CSV only: the file's own columns (API.md).")
    chunk_rows = serializers.IntegerField(
        min_value=10, max_value=50_000, default=CHUNK_ROWS, help_text="Rows per database transaction (and checkpoint)."
    )

    def validate(self, attrs):
        # Checked at POST against the job's merchant (context from jobs.services.job_create): another merchant's
        # upload or account answers as an unknown one does.
        uploads = Upload.objects.filter(pk=attrs["upload_id"], account_id=attrs["account_id"])
        if "merchant_id" in self.context:
            uploads = uploads.filter(account__merchant_id=self.context["merchant_id"])
        if not uploads.exists():
            raise serializers.ValidationError({"upload_id": ["No such upload for this account."]})
        if attrs.get("mapping") and (problems := mapping_problems(attrs["mapping"])):
            raise serializers.ValidationError({"mapping": problems})
        return attrs


class JobScopeError(Exception):
    """The job's merchant is not the merchant of the object it works on."""


class StatementFileError(Exception):
    """A recognised statement file that cannot be parsed: nothing of it was written (the job fails)."""


@job_type("recon.import_file", params=ImportFileParams)
def import_file(ctx: JobContext, params: dict) -> dict | None:
    """Imports an uploaded file (CSV or a bank statement) into staging entries, resuming from its checkpoint."""
    return import_upload(ctx, params)


def import_upload(ctx, params: dict) -> dict | None:
    """The import of one stored upload (`params`: account_id, upload_id, processing_mode, format?, chunk_rows?)
    by a job or a workflow step (`ctx`: checkpoint_data, checkpoint, progress, log, should_stop, merchant_id).
    Returns the ingest report, or None when told to stop (its checkpoint says where to resume)."""
    upload = Upload.objects.select_related("account").get(pk=params["upload_id"])
    account: Account = upload.account
    if str(account.pk) != str(params["account_id"]) or account.merchant_id != ctx.merchant_id:
        raise JobScopeError("The upload does not belong to this job's merchant and account.")
    fmt = params.get("format") or upload_format(upload)  # a settlement run's uploads: from their content
    state = dict(ctx.checkpoint_data)
    rows_done, report = int(state.get("rows_done", 0)), state.get("report")
    spool = None
    if fmt != "csv":
        spool = ingest.statement_spool_path(
            upload_id=upload.pk, fmt=fmt, processing_mode=params["processing_mode"], account_type=account.account_type
        )
        state["lines"] = _statement_spooled(ctx, upload, fmt, spool, params["processing_mode"])["lines"]
    total = state["lines"] if fmt != "csv" else max(1, upload.line_count - 1)  # CSV: newlines minus the header
    unit = "rows" if fmt == "csv" else "statement lines"
    if rows_done == 0:
        ctx.log(
            f"importing {upload.name} ({fmt}, {upload.size} bytes, about {total} {unit}) into {account.account_name}"
        )
        ctx.progress(0, f"0 of about {total} {unit}")
    else:
        ctx.log(f"resuming {upload.name} after {unit[:-1]} {rows_done}", rows_done=rows_done)

    def on_chunk(done: int, chunk_report: dict) -> bool:
        # Inside the chunk's transaction: the checkpoint commits with the chunk's staging entries.
        if "statements" in chunk_report:
            services.bank_statements_record(
                account=account, upload=upload, fmt=fmt, summaries=chunk_report["statements"]
            )
        ctx.checkpoint({**state, "rows_done": done, "report": chunk_report})
        ctx.progress(min(99, 100 * done // max(1, total)), f"{done} of about {total} {unit}")
        return not ctx.should_stop()

    common = dict(
        account=account,
        processing_mode=params["processing_mode"],
        start_row=rows_done,
        report=report,
        chunk_rows=params.get("chunk_rows") or CHUNK_ROWS,
        on_chunk=on_chunk,
    )
    if fmt == "csv":
        report = ingest_csv(lines=open_lines(upload), mapping=params.get("mapping"), source_file=upload.name, **common)
    else:
        report = ingest_statement(spool=spool, upload_id=upload.pk, **common)
    if spool is not None and ctx.stop_reason != "budget" and ctx.stop_reason != "PAUSED":
        ingest.statement_spool_remove(spool)  # done or cancelled (a pause or a slice's end keeps it for the resume)
    if ctx.stop_reason:
        return None  # paused, cancelled or out of time: the runtime decides what comes next
    skipped = report.get("duplicates_skipped", 0)
    ctx.log(
        f"imported {upload.name}: {report['successful_ingestions']} staging entries created, "
        f"{report['failed_ingestions']} {unit} failed" + (f", {skipped} already imported skipped" if skipped else "")
    )
    return {"format": fmt, "statements": report.get("statements", []), "duplicates_skipped": skipped, **report}


@job_type("recon.import_csv", params=ImportFileParams)
def import_csv(ctx: JobContext, params: dict) -> dict | None:
    """Imports an uploaded file: the name of imports started before statements were read (as recon.import_file)."""
    return import_upload(ctx, params)


def _statement_spooled(ctx: JobContext, upload: Upload, fmt: str, spool, processing_mode: str) -> dict:
    """The statement file's spool ({"lines", "statements"}): the one made by an earlier slice on this machine, or
    made now by parsing the whole file (nothing written to the database); a broken file fails the job."""
    meta = ingest.statement_spool_meta(spool)
    if meta is not None:
        return meta
    try:
        meta = ingest.statement_spool(
            account=upload.account,
            fmt=fmt,
            stream=open_bytes(upload),
            processing_mode=processing_mode,
            source_file=upload.name,
            upload_id=upload.pk,
            path=spool,
        )
    except statements.StatementParseError as e:
        raise StatementFileError(
            f"{upload.name} cannot be read as {e.format}: {e.problem} ({e.where}); nothing was imported"
        ) from None
    ctx.log(f"{upload.name}: a {fmt} file of {meta['lines']} statement lines, parsed and checked")
    return meta


class ClosePeriodParams(serializers.Serializer):
    merchant_id = serializers.CharField(max_length=64)
    start_date = serializers.DateField()
    end_date = serializers.DateField()
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")

    def validate(self, attrs):
        # Another merchant's id answers as an unknown one does (checked at POST; issue 17, item 8); a merchant
        # the user sees but that is not the job's own is named as such.
        user = self.context.get("user")
        if not Merchant.objects.filter(pk=attrs["merchant_id"]).exists() or (
            user is not None and not access.can_see(user, attrs["merchant_id"])
        ):
            raise serializers.ValidationError({"merchant_id": ["Unknown merchant."]})
        if "merchant_id" in self.context and self.context["merchant_id"] != attrs["merchant_id"]:
            raise serializers.ValidationError(
                {"merchant_id": ["Must be the job's own merchant_id (the merchant the job belongs to)."]}
            )
        if attrs["end_date"] < attrs["start_date"]:
            raise serializers.ValidationError({"end_date": ["Must not be before start_date."]})
        return attrs


def _signal_sender(ctx: JobContext, name: str):
    """The user who sent the signal the handler just received (None when sent by the system)."""
    from jobs.models import JobSignal

    signal = (
        JobSignal.objects.filter(job_id=ctx.job_id, name=name, consumed_at__isnull=False)
        .select_related("sent_by")
        .order_by("-consumed_at", "-id")
        .first()
    )
    return signal.sent_by if signal is not None else None


@job_type("recon.close_period", params=ClosePeriodParams, signal_views={"approve": "admin:recon_closedperiod_approve"})
def close_period(ctx: JobContext, params: dict) -> dict:
    """Summarises a merchant's period, waits for `approve` or `reject`, then closes it (or not).

    On `approve` the summary is computed again and `services.period_close` decides: while entries dated in the
    period are in review or PENDING it refuses, and the job logs how many and waits for the next signal, unless
    the payload is `{"force": true, "reason": "..."}`."""
    if ctx.merchant_id != params["merchant_id"]:
        raise JobScopeError("The job must belong to the merchant whose period it closes.")
    start, end = dt.date.fromisoformat(params["start_date"]), dt.date.fromisoformat(params["end_date"])
    state = dict(ctx.checkpoint_data)
    if "period_id" in state:  # approved and closed in an earlier slice
        return {
            "status": "closed",
            **{k: state[k] for k in ("period_id", "summary", "approved_by", "closed_at") if k in state},
        }
    if "summary" not in state:
        state = _period_summarise(ctx, merchant_id=params["merchant_id"], start=start, end=end)
    while True:
        ctx.progress(50, "waiting for approve or reject")
        name, payload = ctx.wait_for_any("approve", "reject")
        user = _signal_sender(ctx, name)
        if name == "reject":
            who = user.get_username() if user is not None else ""
            ctx.log(f"rejected{' by ' + who if who else ''}", payload=payload)
            return {"status": "rejected", "summary": state["summary"], "rejected_by": who, "payload": payload}
        closed, state = _period_close_approved(
            ctx, params, start=start, end=end, state=state, by=user or _owner(ctx), payload=payload
        )
        if closed is not None:
            return closed


def _period_summarise(ctx: JobContext, *, merchant_id: str, start: dt.date, end: dt.date) -> dict:
    """The period's summary, logged and checkpointed (the job's first slice): the new checkpoint."""
    summary = reports.period_summary(merchant_id=merchant_id, start_date=start, end_date=end)
    ctx.log(
        f"period {start}..{end}: {summary['staging_entries']['total']} staging entries, "
        f"{summary['open_review']} in the review queue, "
        f"{summary['staging_entries']['by_status']['PENDING']} pending",
        summary=summary,
    )
    with transaction.atomic():
        ctx.checkpoint({"summary": summary})
    return {"summary": summary}


def _period_close_approved(
    ctx: JobContext, params: dict, *, start: dt.date, end: dt.date, state: dict, by, payload: dict
) -> tuple[dict | None, dict]:
    """Closes the period on an `approve` signal (`services.period_close` decides; forced with `payload`'s
    `force` and `reason`). Returns (the job's result, the checkpoint) when closed, or (None, the checkpoint with
    the new summary and one more refusal) when refused."""
    force = payload.get("force") is True
    summary = reports.period_summary(merchant_id=params["merchant_id"], start_date=start, end_date=end)
    try:
        with transaction.atomic():
            period = services.period_close(
                merchant=Merchant.objects.get(pk=params["merchant_id"]),
                start_date=start,
                end_date=end,
                by=by,
                reason=params.get("reason") or f"closed by job {ctx.job_id}",
                force=force,
                force_reason=str(payload.get("reason") or ""),
            )
            result = {
                "status": "closed",
                "period_id": period.pk,
                "summary": summary,
                "approved_by": by.get_username() if by is not None else "",
                "closed_at": period.closed_at.isoformat(),
                "forced": force,
            }
            state = {**state, **{k: v for k, v in result.items() if k != "status"}}
            ctx.checkpoint(state)
    except (errors.PeriodHasOpenEntriesError, ValidationError) as exc:
        message = (
            exc.message
            if isinstance(exc, errors.PeriodHasOpenEntriesError)
            else "; ".join(m for ms in exc.message_dict.values() for m in ms)
        )
        ctx.log(
            f"not closed: {message} Resolve them and approve again, or approve with "
            f'{{"force": true, "reason": "..."}}.',
            open=getattr(exc, "details", {}),
        )
        with transaction.atomic():  # the refused signal counts as received; the summary is the new one
            state = {**state, "summary": summary, "refused": int(state.get("refused", 0)) + 1}
            ctx.checkpoint(state)
        return None, state
    approved_by = result["approved_by"]
    ctx.log(
        f"period {start}..{end} closed{' by ' + approved_by if approved_by else ''} at {result['closed_at']}"
        + (" (forced)" if force else ""),
        period_id=period.pk,
    )
    return result, state


def _owner(ctx: JobContext):
    """The job's owner (the approver when a signal was sent by the system)."""
    if not ctx.owner_id:
        return None
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(pk=ctx.owner_id).first()


class ReviewBulkParams(serializers.Serializer):
    action = serializers.ChoiceField(choices=services.REVIEW_BULK_ACTIONS)
    which = serializers.ChoiceField(choices=["review", "stuck"], default="review")
    created_after = serializers.DateTimeField(required=False, allow_null=True, default=None)
    created_before = serializers.DateTimeField(required=False, allow_null=True, default=None)
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


@job_type("recon.review_bulk", params=ReviewBulkParams)
def review_bulk(ctx: JobContext, params: dict) -> dict | None:
    """Reprocesses or ignores every review-queue entry of the filter, in chunks, as the job's owner (limited to the
    merchants the owner operates, decided from the owner at run time)."""
    from django.contrib.auth import get_user_model
    from django.utils.dateparse import parse_datetime

    from tracker import access

    owner = get_user_model().objects.filter(pk=ctx.owner_id).first() if ctx.owner_id else None
    if owner is None:
        raise PermissionError("A bulk action runs as its owner; this job has none.")
    merchant_ids = access.operable_tenants(owner)
    scope = {
        "which": params["which"],
        "merchant_ids": merchant_ids,
        "created_after": parse_datetime(params["created_after"]) if params.get("created_after") else None,
        "created_before": parse_datetime(params["created_before"]) if params.get("created_before") else None,
    }
    state = dict(ctx.checkpoint_data)
    if "matched" not in state:
        state = {"matched": services.review_queue_matching(**scope).count(), "changed": 0, "after": None}
        with transaction.atomic():
            ctx.checkpoint(state)
    reason = params.get("reason") or f"bulk {params['action']} by {owner.get_username()} (job {ctx.job_id})"
    while True:
        if ctx.should_stop():
            return None
        step = services.review_queue_resolve_chunk(
            action=params["action"], **scope, after=state["after"], by=owner, reason=reason
        )
        state = {**state, "changed": state["changed"] + step["changed"], "after": step["after"]}
        with transaction.atomic():
            ctx.checkpoint(state)
        ctx.progress(
            100 * state["changed"] // max(1, state["matched"]) if step["after"] else 100,
            f"{state['changed']} of {state['matched']} done",
        )
        if step["after"] is None:
            break
    return {
        "matched": state["matched"],
        "changed": state["changed"],
        "skipped": max(0, state["matched"] - state["changed"]),
    }
