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
from django.db.models import Count
from django.utils import timezone
from django.utils.crypto import get_random_string

from recon import engine, errors, queries, validation
from recon.currencies import is_currency, normalize_currency
from recon.models import (
    MONEY_QUANTUM,
    Account,
    AccountType,
    ClosedPeriod,
    Entry,
    MatchMode,
    Merchant,
    MerchantMembership,
    ProcessingMode,
    ReconRule,
    Role,
    Side,
    StagingEntry,
    StagingStatus,
    Transaction,
    TransactionStatus,
)
from recon.selectors import task_is_stuck
from tracker import audit
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


def merchant_rename(*, merchant: Merchant, merchant_name: str) -> Merchant:
    if not (merchant_name or "").strip():
        raise ValidationError({"merchant_name": ["This field is required."]})
    merchant.merchant_name = merchant_name.strip()
    merchant.save(update_fields=["merchant_name", "updated_at"])
    return merchant


def membership_set(*, user, merchant: Merchant, role: str) -> MerchantMembership:
    """Links an existing user to the merchant with `role` (updating an existing link)."""
    if role not in Role.values:
        raise ValidationError({"role": [f"One of {', '.join(Role.values)}."]})
    membership, _ = MerchantMembership.objects.update_or_create(user=user, merchant=merchant, defaults={"role": role})
    return membership


def membership_delete(*, membership: MerchantMembership) -> None:
    membership.delete()


def merchant_user_create(
    *, username: str, merchant_id: str, role: str = Role.VIEWER, password: str | None = None
) -> MerchantMembership:
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
        membership = membership_set(user=user, merchant=merchant, role=role)
    return membership


# --- accounts -----------------------------------------------------------------------------------------


def parse_balance(value, *, field: str = "initial_balance") -> Decimal:
    """A signed Decimal (an opening balance may be negative) with at most 4 decimal places; None is 0."""
    text = str(value if value is not None else "0").strip()
    negative = text.startswith("-") and not isinstance(value, (bool, float))
    balance = parse_amount(text[1:] if negative else value if value is not None else "0", field=field, allow_zero=True)
    return -balance if negative else balance


def account_has_entries(account: Account) -> bool:
    """True once ledger entries or staging entries were written to the account."""
    return Entry.objects.filter(account=account).exists() or StagingEntry.objects.filter(account=account).exists()


def account_create(
    *, merchant: Merchant, account_name: str, account_type: str, currency: str, initial_balance="0"
) -> Account:
    problems = {}
    currency = normalize_currency(currency)
    if not (account_name or "").strip():
        problems["account_name"] = ["This field is required."]
    if account_type not in AccountType.values:
        problems["account_type"] = [f"One of {', '.join(AccountType.values)}."]
    if not is_currency(currency):
        problems["currency"] = ["An ISO 4217 currency code is required."]
    if problems:
        raise ValidationError(problems)
    balance = parse_balance(initial_balance)
    return Account.objects.create(
        merchant=merchant,
        account_name=account_name.strip(),
        account_type=account_type,
        currency=currency,
        initial_balance=balance,
    )


def account_rename(*, account: Account, account_name: str) -> Account:
    return account_update(account=account, account_name=account_name)


def account_update(
    *,
    account: Account,
    account_name: str | None = None,
    account_type: str | None = None,
    currency: str | None = None,
    initial_balance=None,
) -> Account:
    """Changes the given fields (None: unchanged). The name can always change; the type, the currency and the
    opening balance only while the account has no entries and no staging entries (409 `account_has_entries`;
    a trigger of migration 0005 refuses it in the database too)."""
    problems, changes = {}, {}
    if account_name is not None:
        if not account_name.strip():
            problems["account_name"] = ["This field is required."]
        changes["account_name"] = account_name.strip()
    if account_type is not None:
        if account_type not in AccountType.values:
            problems["account_type"] = [f"One of {', '.join(AccountType.values)}."]
        changes["account_type"] = account_type
    if currency is not None:
        currency = normalize_currency(currency)
        if not is_currency(currency):
            problems["currency"] = ["An ISO 4217 currency code is required."]
        changes["currency"] = currency
    if initial_balance is not None:
        try:
            changes["initial_balance"] = parse_balance(initial_balance)
        except ValidationError as exc:
            problems.update(exc.message_dict)
    if problems:
        raise ValidationError(problems)
    with transaction.atomic():
        account = Account.objects.select_for_update().get(pk=account.pk)
        changed = {k: v for k, v in changes.items() if getattr(account, k) != v}
        frozen = sorted(set(changed) & {"account_type", "currency", "initial_balance"})
        if frozen and account_has_entries(account):
            raise errors.AccountHasEntriesError(
                f"The account has entries: its {', '.join(frozen)} can no longer change.", details={"fields": frozen}
            )
        for field, value in changed.items():
            setattr(account, field, value)
        if changed:
            account.save(update_fields=[*changed, "updated_at"])
    return account


def account_delete(*, account: Account) -> None:
    """Deletes an account that has no entries, staging entries or rules (409 otherwise)."""
    with transaction.atomic():
        if (
            Entry.objects.filter(account=account).exists()
            or StagingEntry.objects.filter(account=account).exists()
            or ReconRule.objects.filter(account_one=account).exists()
            or ReconRule.objects.filter(account_two=account).exists()
            or ReconRule.objects.filter(difference_account=account).exists()
        ):
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
    return (
        isinstance(value, str)
        and len(value) <= 100
        and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*(_[A-Za-z0-9-]+)*", value) is not None
    )


def _grouping_problems(confirmation_key: str, pattern: str, match_mode: str, group_key: str) -> dict:
    """What is wrong with a rule's confirmation key, its pattern, its match mode and group key."""
    problems = {}
    field_words = ["A metadata field name (letters, digits, single underscores or dashes)."]
    if confirmation_key and not _is_field_name(confirmation_key):
        problems["confirmation_key"] = field_words
    if pattern and (problem := _pattern_problem(pattern)):
        problems["confirmation_key_pattern"] = [problem]
    if match_mode not in MatchMode.values:
        problems["match_mode"] = [f"One of {', '.join(MatchMode.values)}."]
    if match_mode == MatchMode.ONE_TO_MANY and not group_key:
        problems["group_key"] = ["A one_to_many rule needs a group_key."]
    elif group_key and match_mode != MatchMode.ONE_TO_MANY:
        problems["group_key"] = ["Only a one_to_many rule has a group_key."]
    elif group_key and not _is_field_name(group_key):
        problems["group_key"] = field_words
    return problems


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


def _rule_accounts(merchant: Merchant, account_one_id, account_two_id, difference_account_id) -> tuple:
    """The rule's (account_one, account_two, difference account or None) of `merchant`: 400 when one of the pair
    is missing, 404 when an account is unknown or another merchant's."""
    for field, value in (("account_one_id", account_one_id), ("account_two_id", account_two_id)):
        if value in (None, ""):
            raise ValidationError({field: ["This field is required."]})
    one = _merchant_account(merchant, account_one_id, "account_one_id")
    two = _merchant_account(merchant, account_two_id, "account_two_id")
    diff = (
        _merchant_account(merchant, difference_account_id, "difference_account_id")
        if difference_account_id not in (None, "")
        else None
    )
    return one, two, diff


def _rule_pair_problems(one: Account, two: Account, diff: Account | None) -> dict:
    """What is wrong with a new rule's accounts: the same account twice, different currencies, a pair (or an
    account_one) that already has a rule."""
    problems = {}
    if one.pk == two.pk:
        problems["account_two_id"] = ["account_one and account_two must differ."]
    if one.currency != two.currency:
        problems["account_two_id"] = ["Both accounts must share a currency."]
    if diff is not None and diff.currency != one.currency:
        problems["difference_account_id"] = ["The difference account must share the rule's currency."]
    if ReconRule.objects.filter(account_one=one, account_two=two).exists():
        problems["non_field_errors"] = ["A rule for this account pair already exists."]
    elif ReconRule.objects.filter(account_one=one).exists():
        problems["account_one_id"] = ["This account is already account_one of a rule."]
    return problems


def _rule_tolerances(amount_tolerance, amount_tolerance_pct, problems: dict) -> tuple:
    """The parsed (absolute, percentage) tolerances (None when invalid); their problems are added to `problems`."""
    tolerance = pct = None
    try:
        tolerance = parse_amount(
            amount_tolerance if amount_tolerance is not None else "0", field="amount_tolerance", allow_zero=True
        )
    except ValidationError as exc:
        problems.update(exc.message_dict)
    try:
        pct = parse_amount(
            amount_tolerance_pct if amount_tolerance_pct is not None else "0",
            field="amount_tolerance_pct",
            allow_zero=True,
        )
        if pct > 100:
            problems["amount_tolerance_pct"] = ["At most 100."]
    except ValidationError as exc:
        problems.update(exc.message_dict)
    return tolerance, pct


def recon_rule_create(
    *,
    merchant: Merchant,
    account_one_id,
    account_two_id,
    match_key: str | None = None,
    amount_tolerance="0",
    amount_tolerance_pct="0",
    date_window_days=None,
    difference_account_id=None,
    confirmation_key: str | None = None,
    confirmation_key_pattern: str | None = None,
    match_mode: str | None = None,
    group_key: str | None = None,
) -> ReconRule:
    """Validates the pair and the matching options (the console's rule form too; `_grouping_problems` for the
    confirmation key, its pattern, the match mode and group key); unknown accounts (or another merchant's) are 404."""
    one, two, diff = _rule_accounts(merchant, account_one_id, account_two_id, difference_account_id)
    problems = _rule_pair_problems(one, two, diff)
    match_key = match_key if match_key is not None else "order_id"
    if not _is_field_name(match_key):
        problems["match_key"] = ["A metadata field name (letters, digits, single underscores or dashes)."]
    confirmation_key, pattern = confirmation_key or "", confirmation_key_pattern or ""
    match_mode, group_key = match_mode or MatchMode.ONE_TO_ONE, group_key or ""
    problems.update(_grouping_problems(confirmation_key, pattern, match_mode, group_key))
    tolerance, pct = _rule_tolerances(amount_tolerance, amount_tolerance_pct, problems)
    if date_window_days is not None and (
        isinstance(date_window_days, bool) or not isinstance(date_window_days, int) or date_window_days < 0
    ):
        problems["date_window_days"] = ["A non-negative integer or null."]
    if (tolerance or pct) and diff is None:
        problems["difference_account_id"] = ["A rule with a tolerance needs a difference account."]
    if problems:
        raise ValidationError(problems)
    try:
        with transaction.atomic():
            return ReconRule.objects.create(
                merchant=merchant,
                account_one=one,
                account_two=two,
                match_key=match_key,
                amount_tolerance=tolerance,
                amount_tolerance_pct=pct,
                date_window_days=date_window_days,
                difference_account=diff,
                confirmation_key=confirmation_key,
                confirmation_key_pattern=pattern,
                match_mode=match_mode,
                group_key=group_key,
            )
    except IntegrityError:
        raise ValidationError({"non_field_errors": ["A rule for this account pair already exists."]}) from None


def recon_rule_delete(*, rule: ReconRule) -> None:
    rule.delete()


# --- staging entries (the producer) -------------------------------------------------------------------


def request_hash(
    *, entry_type, amount: Decimal, currency, effective_date: dt.datetime, processing_mode, metadata: dict
) -> str:
    body = {
        "entry_type": entry_type,
        "amount": str(amount.normalize()),
        "currency": currency,
        "effective_date": effective_date.astimezone(dt.UTC).isoformat(),
        "processing_mode": processing_mode,
        "metadata": metadata,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _validate_entry(
    *,
    entry_type,
    amount,
    currency,
    effective_date,
    processing_mode,
    metadata,
    match_keys=(validation.DEFAULT_MATCH_KEY,),
) -> tuple:
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
    elif metadata_problems := validation.metadata_problems(metadata, match_keys=match_keys):
        problems["metadata"] = metadata_problems
    parsed = None
    try:
        parsed = parse_amount(amount)
    except ValidationError as exc:
        problems.update(exc.message_dict)
    if problems:
        raise ValidationError(problems)
    return parsed, metadata


def staging_entry_create(
    *,
    account: Account,
    entry_type: str,
    amount,
    currency: str,
    effective_date: dt.datetime,
    processing_mode: str,
    metadata: dict | None = None,
    idempotency_key: str | None = None,
) -> tuple[StagingEntry, bool]:
    """Inserts the staging entry and its PROCESS_STAGING_ENTRY task in one database transaction. Returns
    (entry, created); a repeated idempotency key with the same body returns the original entry, with a
    different body raises IdempotencyConflictError. The currency code is accepted in any case."""
    currency = normalize_currency(currency)
    amount, metadata = _validate_entry(
        entry_type=entry_type,
        amount=amount,
        currency=currency,
        effective_date=effective_date,
        processing_mode=processing_mode,
        metadata=metadata,
        match_keys=validation.match_keys_of(account),
    )
    digest = request_hash(
        entry_type=entry_type,
        amount=amount,
        currency=currency,
        effective_date=effective_date,
        processing_mode=processing_mode,
        metadata=metadata,
    )
    key = idempotency_key or None
    if key is not None and (found := _staging_entry_by_key(account, key, digest)) is not None:
        return found, False
    try:
        with transaction.atomic():
            entry = StagingEntry(
                account=account,
                entry_type=entry_type,
                amount=amount,
                currency=currency,
                effective_date=effective_date,
                processing_mode=processing_mode,
                metadata=metadata,
                idempotency_key=key,
                request_hash=digest,
            )
            task = task_create_many([engine.task_spec(entry, account.merchant_id)])[0]
            entry.task_id = task.task_id
            entry.save(force_insert=True)
    except IntegrityError:
        if key is not None and (found := _staging_entry_by_key(account, key, digest)) is not None:
            return found, False
        raise
    return entry, True


def _staging_entry_by_key(account: Account, key: str, digest: str) -> StagingEntry | None:
    """The account's entry created with idempotency key `key`, if any; IdempotencyConflictError when it was created
    with another body (`digest`, see request_hash)."""
    found = StagingEntry.objects.filter(account=account, idempotency_key=key).first()
    if found is not None and found.request_hash != digest:
        raise errors.IdempotencyConflictError()
    return found


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
        entries = [
            StagingEntry(
                account=account,
                entry_type=r["entry_type"],
                amount=r["amount"],
                currency=r["currency"],
                effective_date=r["effective_date"],
                processing_mode=r["processing_mode"],
                metadata=r.get("metadata") or {},
            )
            for r in rows
        ]
        if not entries:
            return entries
        now = timezone.now()
        for entry in entries:
            entry.task_id = uuid7()
        _staging_entries_copy_pg(
            account,
            (
                (e.pk, e.task_id, e.entry_type, e.amount, e.currency, e.effective_date, e.processing_mode, e.metadata)
                for e in entries
            ),
            now=now,
        )
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
    NOTHING) and, for each entry actually inserted, its PROCESS_STAGING_ENTRY task (`_staging_copy_insert`), in the
    caller's transaction. Ids, payloads and metadata are made in Python: generating UUIDs or JSON per row in SQL
    cost more than the inserts themselves. Returns the number of staging entries inserted."""

    def copy_line(row: tuple) -> str:  # COPY text: ids, amounts, times and the choices need no escaping
        sid, tid, entry_type, amount, currency, when, mode, metadata = row
        metadata = copy_text(metadata if isinstance(metadata, str) else json_text(metadata))
        when = when if isinstance(when, str) else when.isoformat()
        return (
            f"{sid}\t{tid}\t{entry_type}\t{amount}\t{copy_text(currency)}\t{when}\t{mode}\t{metadata}"
            f'\t{{"staging_entry_id": "{sid}", "mode": "{mode}"}}\n'
        )

    lines = list(map(copy_line, rows))
    return _staging_copy_insert(account, "".join(lines), len(lines), columns=queries.STAGING_COPY_COLUMNS, now=now)


def staging_entries_create_copy_text(*, account: Account, processing_mode: str, tails: list[str]) -> int:
    """Bulk producer for rows that are already COPY text (the statement import's spool rows, so nothing is parsed
    or formatted again): each of `tails` is `entry_type, amount, currency, effective_date, metadata` tab-separated
    and ending in a newline, every field valid for its column and escaped with `copy_text` (metadata a JSON
    object). All rows share `processing_mode`. The ids and the tasks' payloads are added here; the rest is the
    COPY path of `staging_entries_create_rows`. Returns the number of entries written (each with its task)."""
    if processing_mode not in ProcessingMode.values:
        raise ValueError(f"processing_mode {processing_mode!r} is not one of {ProcessingMode.values}")
    if not tails:
        return 0
    ids = uuid7_texts(2 * len(tails))
    mode = f'\t{processing_mode}\t{{"staging_entry_id": "'
    payload_end = f'", "mode": "{processing_mode}"}}\t'
    text = "".join(
        [f"{sid}\t{tid}{mode}{sid}{payload_end}{tail}" for sid, tid, tail in zip(ids[::2], ids[1::2], tails)]
    )
    with transaction.atomic():
        return _staging_copy_insert(
            account, text, len(tails), columns=queries.STAGING_COPY_TEXT_COLUMNS, now=timezone.now()
        )


def _staging_copy_insert(account: Account, text: str, count: int, *, columns: tuple, now: dt.datetime) -> int:
    """COPY `text` (`count` lines of `columns`, see `queries.STAGING_COPY_COLUMNS`) into a temporary table, insert
    the staging entries from it (ON CONFLICT DO NOTHING) and, for each entry actually inserted, its
    PROCESS_STAGING_ENTRY task (`tracker.services.task_insert_from_table`), in the caller's transaction
    (statements: `recon.queries`). Returns the number of staging entries inserted."""
    with connection.cursor() as cursor:
        cursor.execute(queries.STAGING_COPY_CREATE)
        copy_rows(queries.STAGING_COPY_TABLE, columns, text)
        cursor.execute(
            queries.STAGING_ENTRIES_FROM_COPY, {"account_id": account.pk, "status": StagingStatus.PENDING, "now": now}
        )
        inserted = cursor.rowcount
        skipped = inserted != count
        if skipped:
            cursor.execute(queries.STAGING_COPY_SKIPPED_DELETE)
        # The tasks' ids are as new as the entries': they need no conflict check, unless rows were skipped.
        task_insert_from_table(
            task_type=engine.TASK_TYPE,
            tenant=account.merchant_id,
            table=queries.STAGING_COPY_TABLE,
            now=now,
            skip_existing=skipped,
        )
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


def staging_entry_resolve(
    *,
    staging_entry_id,
    action: str,
    by=None,
    entry_id=None,
    reason: str = "",
    write_off: bool = False,
    difference_account_id=None,
) -> StagingEntry:
    """Operator resolution: `match` (force a match with an EXPECTED entry on the same account; beyond the
    rule's tolerance only with `write_off`, see `staging_entry_force_match`), `ignore` (ARCHIVED; a MISMATCH it
    caused reopens; a due task is cancelled) or `reprocess` (PENDING with a new task). 409 when illegal in the
    entry's state or when it would post into a closed period."""
    if action not in ("match", "ignore", "reprocess"):
        raise ValidationError({"action": ["One of match, ignore, reprocess."]})
    pk = _uuid_or_404(staging_entry_id, "Staging entry")
    with transaction.atomic():
        entry = StagingEntry.objects.select_for_update(of=("self",)).select_related("account").filter(pk=pk).first()
        if entry is None:
            raise errors.NotFoundError("Staging entry not found.")
        if action not in staging_entry_resolvable(entry):
            raise errors.IllegalStateError(
                f"Cannot {action} a staging entry that is {entry.status}"
                + (" (its task has not failed)" if entry.status == "PENDING" else "")
                + "."
            )
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
            engine.staging_entries_reprocess(reasons={entry.pk: reason or "reprocess"}, by=by, from_status=entry.status)
            entry.refresh_from_db()
            return entry
        if entry_id in (None, ""):
            raise ValidationError({"entry_id": ["This field is required."]})
        target = Entry.objects.filter(pk=_uuid_or_404(entry_id, "Entry"), account=entry.account).first()
        if target is None:
            raise errors.NotFoundError("Entry not found on this account.")
        return staging_entry_force_match(
            entry=entry,
            target=target,
            by=by,
            reason=reason,
            write_off=write_off,
            difference_account_id=difference_account_id,
        )


def staging_entry_force_match(
    *, entry: StagingEntry, target: Entry, by, reason: str = "", write_off: bool = False, difference_account_id=None
) -> StagingEntry:
    """An operator's forced match of `entry` (in review, locked by the caller inside `transaction.atomic()`) with
    the open expectation `target` on its account, written by the engine as a batch of one. An amount difference
    within the rule's tolerance is booked on the rule's difference account as usual; beyond it the match needs
    `write_off=True` (else 422 `outside_tolerance`), a `reason` (400), the `recon.write_off` permission of `by`
    (403) and a difference account: the rule's, or `difference_account_id` (same merchant and currency) when
    the rule has none (400 otherwise). A write-off is audited on the staging entry's transition (who, amount,
    account, reason) and kept in its metadata (`write_off`). Side, currency and state are the engine's checks."""
    rule = (
        ReconRule.objects.filter(pk=Transaction.objects.filter(pk=target.transaction_id).values("rule_id")[:1])
        .select_related("difference_account")
        .first()
    )
    difference = entry.amount - target.amount
    beyond = (
        target.entry_type == entry.entry_type
        and target.currency == entry.currency
        and abs(difference) > engine.allowed_difference(rule, target.amount)
    )
    if not beyond:
        return engine.staging_entry_force_match(entry=entry, target_entry_id=target.pk, by=by, reason=reason)
    if not write_off:
        raise errors.OutsideToleranceError(
            f"The amount differs beyond the rule's tolerance: expected {target.amount}, got {entry.amount}. "
            "Book the difference as a write-off to match anyway.",
            details={"expected": str(target.amount), "amount": str(entry.amount), "difference": str(difference)},
        )
    account = _write_off_account(entry=entry, rule=rule, difference_account_id=difference_account_id)
    if not (reason or "").strip():
        raise ValidationError({"reason": ["A reason is required for a write-off."]})
    if by is None or not hasattr(by, "has_perm") or not by.has_perm("recon.write_off"):
        raise errors.WriteOffNotAllowed()
    why = (
        f"write-off of {abs(difference)} {entry.currency} to {account.account_name} ({account.pk}), matched to "
        f"entry {target.pk}: {reason.strip()}"
    )
    entry = engine.staging_entry_force_match(
        entry=entry, target_entry_id=target.pk, by=by, reason=why, write_off=True, difference_account_id=account.pk
    )
    entry.refresh_from_db()
    posted = Transaction.objects.filter(source_staging_entry=entry).order_by("-version").first()
    entry.metadata = {
        **entry.metadata,
        "write_off": {
            "amount": str(abs(difference)),
            "currency": entry.currency,
            "account_id": str(account.pk),
            "reason": reason.strip(),
            "transaction_id": str(posted.pk) if posted else None,
            "by": by.get_username() if getattr(by, "pk", None) else str(by),
        },
    }
    StagingEntry.objects.filter(pk=entry.pk).update(metadata=entry.metadata)
    return entry


def _write_off_account(*, entry: StagingEntry, rule: ReconRule | None, difference_account_id) -> Account:
    """The account a write-off books on: the rule's difference account, else `difference_account_id`."""
    chosen = None
    if difference_account_id not in (None, ""):
        chosen = Account.objects.filter(
            pk=_uuid_or_404(difference_account_id, "Account"), merchant_id=entry.account.merchant_id
        ).first()
        if chosen is None:
            raise errors.NotFoundError(
                f"Account {difference_account_id} not found.", details={"field": "difference_account_id"}
            )
    ruled = rule.difference_account if rule is not None and rule.difference_account_id else None
    if ruled is not None:
        if chosen is not None and chosen.pk != ruled.pk:
            raise ValidationError(
                {
                    "difference_account_id": [
                        "The rule books differences on its own difference account; leave this empty."
                    ]
                }
            )
        return ruled
    if chosen is None:
        raise ValidationError(
            {
                "difference_account_id": [
                    "The rule has no difference account: choose the account that takes the write-off."
                ]
            }
        )
    if chosen.currency != entry.currency or chosen.pk == entry.account_id:
        raise ValidationError(
            {"difference_account_id": ["The difference account must be another account in the entry's currency."]}
        )
    return chosen


def staging_entry_resolve_group(
    *, staging_entry_id, by, reason: str, transaction_ids=None, write_off: bool = False
) -> StagingEntry:
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
        return engine.staging_entry_force_group(
            entry=entry, transaction_ids=chosen, by=by, reason=reason, write_off=write_off
        )


# --- closed periods -----------------------------------------------------------------------------------


def _period_bounds(start_date: dt.date, end_date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) in UTC of the days start_date..end_date (both included)."""
    return (
        dt.datetime.combine(start_date, dt.time.min, tzinfo=dt.UTC),
        dt.datetime.combine(end_date + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC),
    )


def period_open_entries(*, merchant_id: str, start_date: dt.date, end_date: dt.date):
    """The merchant's staging entries dated in the period (UTC dates of `effective_date`) that are still in
    the review queue or PENDING: what keeps the period from closing."""
    start, end = _period_bounds(start_date, end_date)
    return StagingEntry.objects.filter(
        account__merchant_id=merchant_id,
        effective_date__gte=start,
        effective_date__lt=end,
        status__in=(StagingStatus.NEEDS_MANUAL_REVIEW, StagingStatus.PENDING),
    )


def period_open_counts(*, merchant_id: str, start_date: dt.date, end_date: dt.date) -> dict:
    """{"in_review": n, "pending": n, "total": n} of `period_open_entries`."""
    counts = dict(
        period_open_entries(merchant_id=merchant_id, start_date=start_date, end_date=end_date)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    review, pending = counts.get(StagingStatus.NEEDS_MANUAL_REVIEW, 0), counts.get(StagingStatus.PENDING, 0)
    return {"in_review": review, "pending": pending, "total": review + pending}


def period_close(
    *,
    merchant: Merchant,
    start_date: dt.date,
    end_date: dt.date,
    by=None,
    reason: str = "",
    force: bool = False,
    force_reason: str = "",
) -> ClosedPeriod:
    """Closes [start_date, end_date] of the merchant's books. The one rule for every way to close (the
    `recon.close_period` job's approve from the console, the API or a workflow step): while staging entries
    dated in the period are in the review queue or PENDING, it raises PeriodHasOpenEntriesError (409, with the
    counts in `details`) unless `force` is set with a `force_reason` (400 without one); a forced close is
    audited with the counts and the reason. Every close writes an audit row (OPEN -> CLOSED, by, reason).
    Afterwards PENDING entries dated in it go to review with PeriodClosedError; resolving into it is refused."""
    if end_date < start_date:
        raise ValidationError({"end_date": ["Must not be before start_date."]})
    if force and not (force_reason or "").strip():
        raise ValidationError({"reason": ["A forced close needs a reason."]})
    user = by if getattr(by, "pk", None) else None
    with transaction.atomic():
        Merchant.objects.select_for_update().filter(pk=merchant.pk).first()  # one close of a merchant at a time
        open_counts = period_open_counts(merchant_id=merchant.pk, start_date=start_date, end_date=end_date)
        if open_counts["total"] and not force:
            raise errors.PeriodHasOpenEntriesError(
                f"{open_counts['total']} staging entries dated in the period are still open "
                f"({open_counts['in_review']} in review, {open_counts['pending']} pending).",
                details=open_counts,
            )
        why = reason or "period closed"
        if force and open_counts["total"]:
            why = (
                f"{why}; forced with {open_counts['total']} open entries ({open_counts['in_review']} in review, "
                f"{open_counts['pending']} pending): {force_reason.strip()}"
            )
        period = ClosedPeriod.objects.create(
            merchant=merchant, start_date=start_date, end_date=end_date, closed_by=user, reason=why
        )
        audit.record_many(ClosedPeriod, [(period.pk, "OPEN", "CLOSED")], by=by, reason=why)
    return period


def period_reopen(*, period: ClosedPeriod, by=None) -> ClosedPeriod:
    """Reopens a closed period; 409 when it is already reopened."""
    with transaction.atomic():
        period = ClosedPeriod.objects.select_for_update().get(pk=period.pk)
        if period.reopened_at is not None:
            raise errors.IllegalStateError("The period is already reopened.")
        period.reopened_at = timezone.now()
        period.reopened_by = by if getattr(by, "pk", None) else None
        period.save(update_fields=["reopened_at", "reopened_by"])
        audit.record_many(ClosedPeriod, [(period.pk, "CLOSED", "OPEN")], by=by, reason="period reopened")
    return period


# --- engine ------------------------------------------------------------------------------------------


def engine_trigger(*, timeout_ms: int, worker_id: str | None = None) -> dict:
    """Drains due tasks in-process for up to `timeout_ms`; returns {"processed", "succeeded", "failed",
    "duration_ms"} with the worker's true counts."""
    import time

    from tracker.worker import Worker, make_worker_id

    started = time.monotonic()
    totals = Worker(worker_id or make_worker_id("trigger")).drain(budget_seconds=timeout_ms / 1000)
    return {
        "processed": totals.processed,
        "succeeded": totals.succeeded,
        "failed": totals.failed,
        "duration_ms": int((time.monotonic() - started) * 1000),
    }


# --- the review queue, whole filter at a time (the console's "Reprocess/Ignore all N matching") --------------

REVIEW_BULK_ACTIONS = ("reprocess", "ignore")


def review_queue_matching(*, which: str = "review", merchant_ids=None, created_after=None, created_before=None):
    """Staging entries of the review queue: `review` = NEEDS_MANUAL_REVIEW and PENDING entries whose task FAILED
    or was CANCELLED; `stuck` = only the latter (recon.selectors). `merchant_ids` None means every merchant."""
    from recon.selectors import staging_entries_in_review, staging_entries_stuck

    qs = staging_entries_stuck() if which == "stuck" else staging_entries_in_review()
    if merchant_ids is not None:
        qs = qs.filter(account__merchant_id__in=sorted(merchant_ids))
    if created_after:
        qs = qs.filter(created_at__gte=created_after)
    if created_before:
        qs = qs.filter(created_at__lt=created_before)
    return qs


def review_queue_resolve_chunk(
    *,
    action: str,
    which: str = "review",
    merchant_ids=None,
    created_after=None,
    created_before=None,
    after=None,
    limit: int = 200,
    by=None,
    reason: str = "",
) -> dict:
    """One chunk of a bulk reprocess/ignore: the next `limit` review-queue entries (in id order after `after`),
    each resolved by `staging_entry_resolve` (the one path for the rule; an entry that changed meanwhile or sits in
    a closed period is skipped). Returns {"seen", "changed", "after"} (`after` None when done)."""
    if action not in REVIEW_BULK_ACTIONS:
        raise ValidationError({"action": ["One of reprocess, ignore."]})
    qs = review_queue_matching(
        which=which, merchant_ids=merchant_ids, created_after=created_after, created_before=created_before
    )
    if after:
        qs = qs.filter(pk__gt=after)
    ids = list(qs.order_by("pk").values_list("pk", flat=True)[:limit])
    changed = 0
    for pk in ids:
        try:
            staging_entry_resolve(staging_entry_id=pk, action=action, by=by, reason=reason)
            changed += 1
        except (errors.ReconError, ValidationError):
            pass  # not in a legal state any more, or in a closed period: skipped
    return {"seen": len(ids), "changed": changed, "after": str(ids[-1]) if len(ids) == limit else None}


def bank_statements_record(*, account: Account, upload, fmt: str, summaries: list[dict]) -> list:
    """Stores the statements of an imported file (`recon.ingest.statement_summary` dicts, in file order) and
    flags each one whose lines do not add up, whose opening balance is not the previous statement's closing
    balance, or that leaves a gap in the statement numbers (the previous one: the same bank account's latest
    statement closed on an earlier day; one delivered again is not its own previous). Called inside the import's
    last transaction."""
    from recon.models import BankStatement

    if BankStatement.objects.filter(upload=upload).exists():  # a resumed import's last chunk, committed before
        return []
    stored = []
    for s in summaries:
        previous = None
        if s["closing_date"] is not None:
            previous = (
                BankStatement.objects.filter(
                    account=account, bank_account=s["account"], closing_date__lt=s["closing_date"]
                )
                .order_by("-closing_date", "-created_at")
                .first()
            )
        problems = []
        if s["balanced"] is False:
            problems.append("lines_do_not_add_up")
        if previous is not None and previous.closing_balance is not None and s["opening_balance"] is not None:
            if Decimal(s["opening_balance"]) != previous.closing_balance:
                problems.append("opening_differs")
        if previous is not None and _sequence_gap(previous.sequence, s["sequence"]):
            problems.append("sequence_gap")
        stored.append(
            BankStatement.objects.create(
                account=account,
                upload=upload,
                format=fmt,
                statement_id=s["statement_id"][:200],
                bank_account=s["account"][:100],
                sequence=s["sequence"][:64],
                currency=s["currency"][:3],
                opening_balance=s["opening_balance"],
                closing_balance=s["closing_balance"],
                opening_date=s["opening_date"],
                closing_date=s["closing_date"],
                line_count=s["lines"],
                lines_total=s["lines_total"],
                problems=problems,
            )
        )
    return stored


def _sequence_gap(previous: str, current: str) -> bool:
    """Statement numbers (MT940 `:28C:` before the `/`, camt sequence numbers) that skip one or more."""
    try:
        before, now = int(previous.split("/")[0]), int(current.split("/")[0])
    except (ValueError, AttributeError):
        return False
    return now > before + 1
