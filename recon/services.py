"""Recon services: merchants and their users, accounts, recon rules, staging entries (the transactional
producer), resolving the review queue, and closed periods. Views, admin, commands and handlers call these."""

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.crypto import get_random_string

from recon import engine, errors, queries
from recon.currencies import is_currency
from recon.models import (MONEY_QUANTUM, Account, AccountType, ClosedPeriod, Entry, MatchMode, Merchant,
                          MerchantMembership, ProcessingMode, ReconRule, Role, Side, StagingEntry, StagingStatus,
                          Transaction, TransactionStatus)
from recon.selectors import task_is_stuck
from tracker.bulk import copy_rows, copy_text, json_text
from tracker.ids import uuid7, uuid7_texts
from tracker.models import ProcessTracker
from tracker.services import task_create_many, task_insert_from_table

MAX_AMOUNT = Decimal("9999999999999999.9999")


def _uuid_or_404(value, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise errors.NotFoundError(f"{what} not found.") from None


def parse_amount(value, *, field: str = "amount", allow_zero: bool = False) -> Decimal:
    """A positive Decimal with at most 4 decimal places (never through float)."""
    if isinstance(value, float) or isinstance(value, bool):
        raise ValidationError({field: ["Send amounts as strings or JSON numbers."]})
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValidationError({field: ["A valid decimal number is required."]}) from None
    if not amount.is_finite():
        raise ValidationError({field: ["A valid decimal number is required."]})
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ValidationError({field: ["Must be positive." if not allow_zero else "Must not be negative."]})
    if amount.as_tuple().exponent < -4 and amount != amount.quantize(MONEY_QUANTUM):
        raise ValidationError({field: ["At most 4 decimal places."]})
    if amount > MAX_AMOUNT:
        raise ValidationError({field: ["Too large."]})
    return amount.quantize(MONEY_QUANTUM)


# --- merchants and users ------------------------------------------------------------------------------

def merchant_create(*, merchant_name: str, merchant_id: str | None = None) -> Merchant:
    if not (merchant_name or "").strip():
        raise ValidationError({"merchant_name": ["This field is required."]})
    merchant_id = (merchant_id or "").strip() or f"m_{get_random_string(12).lower()}"
    if len(merchant_id) > 64:
        raise ValidationError({"merchant_id": ["At most 64 characters."]})
    try:
        with transaction.atomic():
            return Merchant.objects.create(merchant_id=merchant_id, merchant_name=merchant_name.strip())
    except IntegrityError:
        raise ValidationError({"merchant_id": ["A merchant with this id already exists."]}) from None


def merchant_user_create(*, username: str, merchant_id: str, role: str = Role.VIEWER,
                         password: str | None = None) -> MerchantMembership:
    """Creates the user if needed and links it to the merchant with `role` (updating an existing link)."""
    if role not in Role.values:
        raise ValidationError({"role": [f"One of {', '.join(Role.values)}."]})
    merchant = Merchant.objects.filter(pk=merchant_id).first()
    if merchant is None:
        raise errors.NotFoundError(f"Merchant {merchant_id} not found.")
    User = get_user_model()
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=username)
        if created or password:
            if password:
                user.set_password(password)
            else:
                user.set_unusable_password()
            user.save()
        membership, _ = MerchantMembership.objects.update_or_create(user=user, merchant=merchant,
                                                                    defaults={"role": role})
    return membership


# --- accounts -----------------------------------------------------------------------------------------

def account_create(*, merchant: Merchant, account_name: str, account_type: str, currency: str,
                   initial_balance="0") -> Account:
    problems = {}
    if not (account_name or "").strip():
        problems["account_name"] = ["This field is required."]
    if account_type not in AccountType.values:
        problems["account_type"] = [f"One of {', '.join(AccountType.values)}."]
    if not is_currency(currency):
        problems["currency"] = ["An ISO 4217 currency code is required."]
    if problems:
        raise ValidationError(problems)
    text = str(initial_balance if initial_balance is not None else "0").strip()
    negative = text.startswith("-") and not isinstance(initial_balance, (bool, float))
    balance = parse_amount(text[1:] if negative else initial_balance if initial_balance is not None else "0",
                           field="initial_balance", allow_zero=True)
    balance = -balance if negative else balance
    return Account.objects.create(merchant=merchant, account_name=account_name.strip(), account_type=account_type,
                                  currency=currency, initial_balance=balance)


def account_rename(*, account: Account, account_name: str) -> Account:
    if not (account_name or "").strip():
        raise ValidationError({"account_name": ["This field is required."]})
    account.account_name = account_name.strip()
    account.save(update_fields=["account_name", "updated_at"])
    return account


def account_delete(*, account: Account) -> None:
    """Deletes an account that has no entries, staging entries or rules (409 otherwise)."""
    with transaction.atomic():
        if (Entry.objects.filter(account=account).exists() or StagingEntry.objects.filter(account=account).exists()
                or ReconRule.objects.filter(account_one=account).exists()
                or ReconRule.objects.filter(account_two=account).exists()
                or ReconRule.objects.filter(difference_account=account).exists()):
            raise errors.AccountInUseError()
        account.delete()


# --- recon rules --------------------------------------------------------------------------------------

def _merchant_account(merchant: Merchant, account_id, field: str) -> Account:
    pk = _uuid_or_404(account_id, "Account")
    account = Account.objects.filter(pk=pk, merchant=merchant).first()
    if account is None:
        raise errors.NotFoundError(f"Account {account_id} not found.", details={"field": field})
    return account


def _is_field_name(value) -> bool:
    return isinstance(value, str) and len(value) <= 100 \
        and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*(_[A-Za-z0-9-]+)*", value) is not None


def _pattern_problem(pattern) -> str | None:
    """Why `pattern` is not a usable confirmation-key pattern (a regular expression with one group), or None."""
    if not isinstance(pattern, str) or len(pattern) > 500:
        return "A regular expression of at most 500 characters."
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"Not a valid regular expression: {exc}."
    if compiled.groups != 1:
        return f"The pattern must have exactly one group; it has {compiled.groups}."
    return None


def recon_rule_create(*, merchant: Merchant, account_one_id, account_two_id, match_key: str | None = None,
                      amount_tolerance="0", amount_tolerance_pct="0", date_window_days=None,
                      difference_account_id=None, confirmation_key: str | None = None,
                      confirmation_key_pattern: str | None = None, match_mode: str | None = None,
                      group_key: str | None = None) -> ReconRule:
    """Validates the pair and the matching options (the console's rule form comes here too); unknown accounts (or
    another merchant's) are 404. `confirmation_key_pattern` is a regular expression with exactly one group;
    `group_key` is required for (and only taken by) `one_to_many`."""
    for field, value in (("account_one_id", account_one_id), ("account_two_id", account_two_id)):
        if value in (None, ""):
            raise ValidationError({field: ["This field is required."]})
    one = _merchant_account(merchant, account_one_id, "account_one_id")
    two = _merchant_account(merchant, account_two_id, "account_two_id")
    diff = _merchant_account(merchant, difference_account_id, "difference_account_id") \
        if difference_account_id not in (None, "") else None
    problems = {}
    if one.pk == two.pk:
        problems["account_two_id"] = ["account_one and account_two must differ."]
    if one.currency != two.currency:
        problems["account_two_id"] = ["Both accounts must share a currency."]
    if diff is not None and diff.currency != one.currency:
        problems["difference_account_id"] = ["The difference account must share the rule's currency."]
    match_key = match_key if match_key is not None else "order_id"
    if not _is_field_name(match_key):
        problems["match_key"] = ["A metadata field name (letters, digits, single underscores or dashes)."]
    confirmation_key = confirmation_key or ""
    if confirmation_key and not _is_field_name(confirmation_key):
        problems["confirmation_key"] = ["A metadata field name (letters, digits, single underscores or dashes)."]
    pattern = confirmation_key_pattern or ""
    if pattern:
        problem = _pattern_problem(pattern)
        if problem:
            problems["confirmation_key_pattern"] = [problem]
    match_mode = match_mode or MatchMode.ONE_TO_ONE
    if match_mode not in MatchMode.values:
        problems["match_mode"] = [f"One of {', '.join(MatchMode.values)}."]
    group_key = group_key or ""
    if match_mode == MatchMode.ONE_TO_MANY and not group_key:
        problems["group_key"] = ["A one_to_many rule needs a group_key."]
    elif group_key and match_mode != MatchMode.ONE_TO_MANY:
        problems["group_key"] = ["Only a one_to_many rule has a group_key."]
    elif group_key and not _is_field_name(group_key):
        problems["group_key"] = ["A metadata field name (letters, digits, single underscores or dashes)."]
    tolerance = pct = None
    try:
        tolerance = parse_amount(amount_tolerance if amount_tolerance is not None else "0",
                                 field="amount_tolerance", allow_zero=True)
    except ValidationError as exc:
        problems.update(exc.message_dict)
    try:
        pct = parse_amount(amount_tolerance_pct if amount_tolerance_pct is not None else "0",
                           field="amount_tolerance_pct", allow_zero=True)
        if pct > 100:
            problems["amount_tolerance_pct"] = ["At most 100."]
    except ValidationError as exc:
        problems.update(exc.message_dict)
    if date_window_days is not None and (isinstance(date_window_days, bool) or not isinstance(date_window_days, int)
                                         or date_window_days < 0):
        problems["date_window_days"] = ["A non-negative integer or null."]
    if (tolerance or pct) and diff is None:
        problems["difference_account_id"] = ["A rule with a tolerance needs a difference account."]
    if ReconRule.objects.filter(account_one=one, account_two=two).exists():
        problems["non_field_errors"] = ["A rule for this account pair already exists."]
    elif ReconRule.objects.filter(account_one=one).exists():
        problems["account_one_id"] = ["This account is already account_one of a rule."]
    if problems:
        raise ValidationError(problems)
    try:
        with transaction.atomic():
            return ReconRule.objects.create(merchant=merchant, account_one=one, account_two=two, match_key=match_key,
                                            amount_tolerance=tolerance, amount_tolerance_pct=pct,
                                            date_window_days=date_window_days, difference_account=diff,
                                            confirmation_key=confirmation_key, confirmation_key_pattern=pattern,
                                            match_mode=match_mode, group_key=group_key)
    except IntegrityError:
        raise ValidationError({"non_field_errors": ["A rule for this account pair already exists."]}) from None


def recon_rule_delete(*, rule: ReconRule) -> None:
    rule.delete()


# --- staging entries (the producer) -------------------------------------------------------------------

def request_hash(*, entry_type, amount: Decimal, currency, effective_date: dt.datetime, processing_mode,
                 metadata: dict) -> str:
    body = {"entry_type": entry_type, "amount": str(amount.normalize()), "currency": currency,
            "effective_date": effective_date.astimezone(dt.UTC).isoformat(), "processing_mode": processing_mode,
            "metadata": metadata}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _validate_entry(*, entry_type, amount, currency, effective_date, processing_mode, metadata) -> tuple:
    problems = {}
    if entry_type not in Side.values:
        problems["entry_type"] = [f"One of {', '.join(Side.values)}."]
    if processing_mode not in ProcessingMode.values:
        problems["processing_mode"] = [f"One of {', '.join(ProcessingMode.values)}."]
    if not is_currency(currency):
        problems["currency"] = ["An ISO 4217 currency code is required."]
    if not isinstance(effective_date, dt.datetime) or effective_date.tzinfo is None:
        problems["effective_date"] = ["A date or a date-time with timezone is required."]
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        problems["metadata"] = ["Must be a JSON object."]
    parsed = None
    try:
        parsed = parse_amount(amount)
    except ValidationError as exc:
        problems.update(exc.message_dict)
    if problems:
        raise ValidationError(problems)
    return parsed, metadata


def staging_entry_create(*, account: Account, entry_type: str, amount, currency: str, effective_date: dt.datetime,
                         processing_mode: str, metadata: dict | None = None, idempotency_key: str | None = None
                         ) -> tuple[StagingEntry, bool]:
    """Inserts the staging entry and its PROCESS_STAGING_ENTRY task in one database transaction. Returns
    (entry, created); a repeated idempotency key with the same body returns the original entry, with a
    different body raises IdempotencyConflictError."""
    amount, metadata = _validate_entry(entry_type=entry_type, amount=amount, currency=currency,
                                       effective_date=effective_date, processing_mode=processing_mode,
                                       metadata=metadata)
    digest = request_hash(entry_type=entry_type, amount=amount, currency=currency, effective_date=effective_date,
                          processing_mode=processing_mode, metadata=metadata)
    key = idempotency_key or None

    def existing():
        found = StagingEntry.objects.filter(account=account, idempotency_key=key).first()
        if found is not None and found.request_hash != digest:
            raise errors.IdempotencyConflictError()
        return found

    if key is not None and (found := existing()) is not None:
        return found, False
    try:
        with transaction.atomic():
            entry = StagingEntry(account=account, entry_type=entry_type, amount=amount, currency=currency,
                                 effective_date=effective_date, processing_mode=processing_mode, metadata=metadata,
                                 idempotency_key=key, request_hash=digest)
            task = task_create_many([engine.task_spec(entry, account.merchant_id)])[0]
            entry.task_id = task.task_id
            entry.save(force_insert=True)
    except IntegrityError:
        if key is not None and (found := existing()) is not None:
            return found, False
        raise
    return entry, True


def commit_asynchronously() -> None:
    """Inside a bulk chunk's transaction: its commit does not wait for the WAL flush (`synchronous_commit =
    off`, this transaction only). A server crash may then lose the chunks committed in the last fraction of a
    second, each whole and together with its checkpoint, so an import resumes before them: nothing is
    half-written or written twice."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")


def staging_entries_create_many(*, account: Account, rows: list[dict]) -> list[StagingEntry]:
    """Bulk producer for validated rows (keys entry_type, amount (Decimal), currency, effective_date,
    processing_mode, metadata): entries and their tasks, in the caller's transaction (or its own), written with
    COPY (`_staging_entries_copy_pg`)."""
    with transaction.atomic():
        entries = [StagingEntry(account=account, entry_type=r["entry_type"], amount=r["amount"],
                                currency=r["currency"], effective_date=r["effective_date"],
                                processing_mode=r["processing_mode"], metadata=r.get("metadata") or {})
                   for r in rows]
        if not entries:
            return entries
        now = timezone.now()
        for entry in entries:
            entry.task_id = uuid7()
        _staging_entries_copy_pg(
            account, ((e.pk, e.task_id, e.entry_type, e.amount, e.currency, e.effective_date,
                       e.processing_mode, e.metadata) for e in entries), now=now)
        for entry in entries:
            entry.created_at = entry.updated_at = now
            entry._state.adding = False
    return entries


def staging_entries_create_rows(*, account: Account, rows: list[tuple]) -> int:
    """Bulk producer for the CSV import: validated rows as plain tuples `(entry_type, amount, currency,
    effective_date, processing_mode, metadata)` (amount a Decimal or its text with at most 4 decimal places,
    effective_date an aware datetime or its ISO text, metadata a dict or its JSON text), so no model instance
    is built (COPY; the ids are one `uuid7_texts` run). Returns the number of entries written (each with its
    task)."""
    if not rows:
        return 0
    ids = uuid7_texts(2 * len(rows))
    rows_with_ids = ((sid, tid, *row) for sid, tid, row in zip(ids[::2], ids[1::2], rows))
    with transaction.atomic():
        return _staging_entries_copy_pg(account, rows_with_ids, now=timezone.now())


def _staging_entries_copy_pg(account: Account, rows: Iterable[tuple], *, now: dt.datetime) -> int:
    """COPY the rows `(staging_entry_id, task_id, entry_type, amount, currency, effective_date, processing_mode,
    metadata)` (ids as UUIDs or their text, new and time-ordered for index locality; metadata a dict or its
    JSON text) with each task's payload into a temporary table, insert the staging entries from it (ON CONFLICT DO
    NOTHING) and, for each entry actually inserted, its PROCESS_STAGING_ENTRY task
    (`tracker.services.task_insert_from_table`), in the caller's transaction (statements: `recon.queries`). Ids,
    payloads and metadata are made in Python: generating UUIDs or JSON per row in SQL cost more than the inserts
    themselves. Returns the number of staging entries inserted."""

    def copy_line(row: tuple) -> str:  # COPY text: ids, amounts, times and the choices need no escaping
        sid, tid, entry_type, amount, currency, when, mode, metadata = row
        metadata = copy_text(metadata if isinstance(metadata, str) else json_text(metadata))
        when = when if isinstance(when, str) else when.isoformat()
        return (f"{sid}\t{tid}\t{entry_type}\t{amount}\t{copy_text(currency)}\t{when}\t{mode}\t{metadata}"
                f'\t{{"staging_entry_id": "{sid}", "mode": "{mode}"}}\n')

    lines = list(map(copy_line, rows))
    with connection.cursor() as cursor:
        cursor.execute(queries.STAGING_COPY_CREATE)
        copy_rows(queries.STAGING_COPY_TABLE, queries.STAGING_COPY_COLUMNS, "".join(lines))
        cursor.execute(queries.STAGING_ENTRIES_FROM_COPY,
                       {"account_id": account.pk, "status": StagingStatus.PENDING, "now": now})
        inserted = cursor.rowcount
        skipped = inserted != len(lines)
        if skipped:
            cursor.execute(queries.STAGING_COPY_SKIPPED_DELETE)
        # The tasks' ids are as new as the entries': they need no conflict check, unless rows were skipped.
        task_insert_from_table(task_type=engine.TASK_TYPE, tenant=account.merchant_id, table=queries.STAGING_COPY_TABLE,
                               now=now, skip_existing=skipped)
        cursor.execute(queries.STAGING_COPY_DROP)
    return inserted


def _task_status(entry: StagingEntry) -> str | None:
    if entry.task_id is None:
        return None
    return ProcessTracker.objects.filter(pk=entry.task_id).values_list("status", flat=True).first()


def staging_entry_resolvable(entry: StagingEntry) -> set[str]:
    """The resolve actions legal for the entry now."""
    if entry.status == StagingStatus.NEEDS_MANUAL_REVIEW:
        return {"match", "ignore", "reprocess"}
    if entry.status == StagingStatus.PENDING and task_is_stuck(_task_status(entry)):
        return {"ignore", "reprocess"}
    return set()


def _reopen_mismatch(entry: StagingEntry, by, reason: str) -> None:
    if entry.mismatch_transaction_id is None:
        return
    txn = Transaction.objects.select_for_update().get(pk=entry.mismatch_transaction_id)
    if txn.status == TransactionStatus.MISMATCH:
        txn.reopen(by=by, reason=reason)
        txn.save()
    entry.mismatch_transaction = None
    entry.save(update_fields=["mismatch_transaction", "updated_at"])


def staging_entry_resolve(*, staging_entry_id, action: str, by=None, entry_id=None, reason: str = "") -> StagingEntry:
    """Operator resolution: `match` (force a match with an EXPECTED entry on the same account), `ignore`
    (ARCHIVED; a MISMATCH it caused reopens; a due task is cancelled) or `reprocess` (PENDING with a new
    task). 409 when illegal in the entry's state or when it would post into a closed period."""
    if action not in ("match", "ignore", "reprocess"):
        raise ValidationError({"action": ["One of match, ignore, reprocess."]})
    pk = _uuid_or_404(staging_entry_id, "Staging entry")
    with transaction.atomic():
        entry = StagingEntry.objects.select_for_update(of=("self",)).select_related("account").filter(pk=pk).first()
        if entry is None:
            raise errors.NotFoundError("Staging entry not found.")
        if action not in staging_entry_resolvable(entry):
            raise errors.IllegalStateError(f"Cannot {action} a staging entry that is {entry.status}"
                                           + (" (its task has not failed)" if entry.status == "PENDING" else "") + ".")
        if action == "ignore":
            if not (reason or "").strip():
                raise ValidationError({"reason": ["A reason is required."]})
            _reopen_mismatch(entry, by, f"staging entry {entry.pk} ignored")
            if entry.task_id:
                task = ProcessTracker.objects.select_for_update().filter(pk=entry.task_id).first()
                if task is not None and task.can_cancel():
                    task.cancel(by=by, reason="staging entry ignored")
                    task.save()
            entry.metadata = {**entry.metadata, "ignored_reason": reason}
            entry.ignore(by=by, reason=reason)
            entry.save()
            return entry
        if engine.period_is_closed(merchant_id=entry.account.merchant_id, when=entry.effective_date):
            raise errors.PeriodClosedConflict()
        if action == "reprocess":
            _reopen_mismatch(entry, by, f"staging entry {entry.pk} reprocessed")
            engine.staging_entries_reprocess(reasons={entry.pk: reason or "reprocess"}, by=by,
                                           from_status=entry.status)
            entry.refresh_from_db()
            return entry
        return _resolve_match(entry, entry_id=entry_id, by=by, reason=reason)


def _resolve_match(entry: StagingEntry, *, entry_id, by, reason: str) -> StagingEntry:
    """The operator's forced match, through the engine as a batch of one."""
    if entry_id in (None, ""):
        raise ValidationError({"entry_id": ["This field is required."]})
    target_pk = _uuid_or_404(entry_id, "Entry")
    return engine.staging_entry_force_match(entry=entry, target_entry_id=target_pk, by=by, reason=reason)


def staging_entry_resolve_group(*, staging_entry_id, by, reason: str, transaction_ids=None,
                                write_off: bool = False) -> StagingEntry:
    """An operator's resolution of a payout in review with a grouped mismatch (metadata.group): accept the
    group's members named by `transaction_ids` (default all; a subset is a split, the rest stay open), with
    `write_off` booking the whole difference on the rule's difference account (needs the `recon.write_off`
    permission). A reason is required; the change is audited with it. 409 when the entry is not in review or in
    a closed period, 422 when the members no longer add up (or are not open)."""
    if not (reason or "").strip():
        raise ValidationError({"reason": ["A reason is required."]})
    if write_off and not (by is not None and by.has_perm("recon.write_off")):
        raise PermissionDenied("A write-off needs the recon.write_off permission.")
    pk = _uuid_or_404(staging_entry_id, "Staging entry")
    with transaction.atomic():
        entry = StagingEntry.objects.select_for_update(of=("self",)).select_related("account").filter(pk=pk).first()
        if entry is None:
            raise errors.NotFoundError("Staging entry not found.")
        group = (entry.metadata or {}).get("group")
        if entry.status != StagingStatus.NEEDS_MANUAL_REVIEW or not group:
            raise errors.IllegalStateError("Only a payout in review with a grouped mismatch can be resolved so.")
        if engine.period_is_closed(merchant_id=entry.account.merchant_id, when=entry.effective_date):
            raise errors.PeriodClosedConflict()
        chosen = group["member_transaction_ids"] if transaction_ids is None else list(transaction_ids)
        if not chosen or any(str(t) not in group["member_transaction_ids"] for t in chosen):
            raise ValidationError({"transaction_ids": ["Members of the entry's group, at least one."]})
        return engine.staging_entry_force_group(entry=entry, transaction_ids=chosen, by=by, reason=reason,
                                                write_off=write_off)


# --- closed periods -----------------------------------------------------------------------------------

def period_close(*, merchant: Merchant, start_date: dt.date, end_date: dt.date, by=None,
                 reason: str = "") -> ClosedPeriod:
    """Closes [start_date, end_date] of the merchant's books (staff). PENDING entries dated in it will go to
    review with PeriodClosedError when processed; resolving into it is refused."""
    if end_date < start_date:
        raise ValidationError({"end_date": ["Must not be before start_date."]})
    return ClosedPeriod.objects.create(merchant=merchant, start_date=start_date, end_date=end_date,
                                       closed_by=by if getattr(by, "pk", None) else None, reason=reason)


def period_reopen(*, period: ClosedPeriod, by=None) -> ClosedPeriod:
    """Reopens a closed period; 409 when it is already reopened."""
    with transaction.atomic():
        period = ClosedPeriod.objects.select_for_update().get(pk=period.pk)
        if period.reopened_at is not None:
            raise errors.IllegalStateError("The period is already reopened.")
        period.reopened_at = timezone.now()
        period.reopened_by = by if getattr(by, "pk", None) else None
        period.save(update_fields=["reopened_at", "reopened_by"])
    return period


# --- engine ------------------------------------------------------------------------------------------

def engine_trigger(*, timeout_ms: int, worker_id: str | None = None) -> dict:
    """Drains due tasks in-process for up to `timeout_ms`; returns {"processed", "succeeded", "failed",
    "duration_ms"} with the worker's true counts."""
    import time

    from tracker.worker import Worker, make_worker_id

    started = time.monotonic()
    totals = Worker(worker_id or make_worker_id("trigger")).drain(budget_seconds=timeout_ms / 1000)
    return {"processed": totals.processed, "succeeded": totals.succeeded, "failed": totals.failed,
            "duration_ms": int((time.monotonic() - started) * 1000)}
