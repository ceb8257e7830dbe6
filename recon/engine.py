"""The matching engine: processes one PENDING staging entry (TRANSACTION or CONFIRMATION mode), fulfils
expectations, and re-queues confirmations that were waiting for an expectation.

Everything here is called inside a `transaction.atomic()` opened by the caller (the tracker worker or a
service). Locks are taken in a fixed order: the staging entry first, then transactions ordered by id."""

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from operator import attrgetter
from typing import NamedTuple

from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Subquery
from django.utils import timezone

from recon import errors
from recon.models import (Account, ClosedPeriod, Entry, EntryStatus, ProcessingMode, ReconRule, StagingEntry,
                          StagingStatus, Transaction, TransactionStatus, opposite)
from tracker import audit
from tracker.bulk import array_columns, array_literal, insert_rows, load_models, to_json
from tracker.errors import PermanentError
from tracker.ids import uuid7_texts
from tracker.services import TaskSpec, task_create_many

TASK_TYPE = "PROCESS_STAGING_ENTRY"
OUTCOME_KEYS = ("match_type", "error", "error_type")


# --- helpers -----------------------------------------------------------------------------------------

def period_is_closed(*, merchant_id: str, when: dt.datetime | dt.date) -> bool:
    """True when `when` (its UTC date) lies in a closed (not reopened) period of the merchant."""
    day = when.astimezone(dt.UTC).date() if isinstance(when, dt.datetime) else when
    return ClosedPeriod.objects.filter(merchant_id=merchant_id, reopened_at__isnull=True,
                                       start_date__lte=day, end_date__gte=day).exists()


def _check_balanced(legs: list[tuple[str, Decimal, str]]) -> None:
    """Raises UnbalancedTransactionError unless the (side, amount, currency) legs are positive and balance
    per currency."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for side, amount, currency in legs:
        totals[currency] += amount if side == "DEBIT" else -amount
    if any(v != 0 for v in totals.values()) or any(leg[1] <= 0 for leg in legs):
        raise errors.UnbalancedTransactionError(
            "The resulting transaction would not balance: " + ", ".join(f"{c} {v}" for c, v in totals.items()))


def allowed_difference(rule: ReconRule | None, expected_amount: Decimal) -> Decimal:
    """The largest amount difference a rule accepts: the larger of its absolute and percent tolerance."""
    if rule is None:
        return Decimal(0)
    pct = (expected_amount * rule.amount_tolerance_pct / Decimal(100)).quantize(Decimal("0.0001"))
    return max(rule.amount_tolerance, pct)


def mismatch_reasons(staging: StagingEntry, expected: Entry, rule: ReconRule | None) -> list[str]:
    """What differs between a confirmation and its one candidate expectation (side, currency, amount beyond
    the rule's tolerance, date window); empty when they agree."""
    reasons = []
    if expected.entry_type != staging.entry_type:
        reasons.append(f"side differs: expected {expected.entry_type}, got {staging.entry_type}")
    if expected.currency != staging.currency:
        reasons.append(f"currency differs: expected {expected.currency}, got {staging.currency}")
    if abs(staging.amount - expected.amount) > allowed_difference(rule, expected.amount):
        reasons.append(f"amount differs: expected {expected.amount}, got {staging.amount}")
    if rule and rule.date_window_days is not None:
        days = abs((staging.effective_date - expected.effective_date).total_seconds()) / 86400
        if days > rule.date_window_days:
            reasons.append(f"date outside the {rule.date_window_days}-day window: expected "
                           f"{expected.effective_date.date()}, got {staging.effective_date.date()}")
    return reasons


def _entry_metadata(staging: StagingEntry) -> dict:
    clean = {k: v for k, v in staging.metadata.items() if k not in OUTCOME_KEYS}
    return {**clean, "source_staging_entry_id": str(staging.staging_entry_id)}


def _client_metadata(staging: StagingEntry) -> dict:
    return {k: v for k, v in staging.metadata.items() if k not in OUTCOME_KEYS}


# --- processing --------------------------------------------------------------------------------------

def staging_entry_process(*, staging_entry_id, task_id=None, by: str = "system") -> StagingEntry | None:
    """Processes one staging entry. Called inside `transaction.atomic()` (the worker's). Locks the entry;
    skips it (returns it unchanged) when it is no longer PENDING or belongs to another task. Outcome errors
    are recorded on the entry (NEEDS_MANUAL_REVIEW); other exceptions propagate (the tracker retries)."""
    staging = (StagingEntry.objects.select_for_update(of=("self",)).select_related("account")
               .filter(pk=staging_entry_id).first())
    if staging is None:
        return None
    if staging.status != StagingStatus.PENDING:
        return staging
    if task_id is not None and staging.task_id is not None and str(staging.task_id) != str(task_id):
        return staging
    mismatched = None
    try:
        with transaction.atomic():
            if staging.processing_mode == ProcessingMode.TRANSACTION:
                _process_transaction(staging, by)
            else:
                _process_confirmation(staging, by)
    except errors.MismatchError as exc:
        mismatched = exc.details.pop("_transaction", None)
        _record_outcome_error(staging, exc, by)
    except errors.OutcomeError as exc:
        _record_outcome_error(staging, exc, by)
    if mismatched is not None:
        txn = Transaction.objects.select_for_update().get(pk=mismatched)
        if txn.status == TransactionStatus.EXPECTED:
            txn.mark_mismatch(by=by, reason=f"staging entry {staging.pk}: {staging.metadata.get('error')}")
            txn.save()
            staging.mismatch_transaction = txn
            staging.save(update_fields=["mismatch_transaction", "updated_at"])
    return staging


def _record_outcome_error(staging: StagingEntry, exc: errors.OutcomeError, by) -> None:
    staging.metadata = {**_client_metadata(staging), "error": exc.message, "error_type": exc.error_type}
    staging.send_to_review(by=by, reason=f"{exc.error_type}: {exc.message}")
    staging.save()


def _common_checks(staging: StagingEntry) -> None:
    account = staging.account
    if staging.currency != account.currency:
        raise errors.CurrencyMismatchError(
            f"Entry currency {staging.currency} differs from the account's currency {account.currency}.")
    if period_is_closed(merchant_id=account.merchant_id, when=staging.effective_date):
        raise errors.PeriodClosedError(
            f"The effective date {staging.effective_date.date()} lies in a closed period.")


def _process_transaction(staging: StagingEntry, by) -> Transaction:
    """TRANSACTION mode: version 1 (EXPECTED) with a POSTED leg here and an EXPECTED leg on account_two."""
    _common_checks(staging)
    account = staging.account
    rule = ReconRule.objects.select_related("account_two").filter(account_one=account).first()
    if rule is None:
        raise errors.NoReconRuleFoundError(f"No recon rule has account {account.pk} as account_one.")
    key_value = staging.metadata.get(rule.match_key)
    has_key = key_value not in (None, "")
    if not has_key:
        key_value = str(staging.staging_entry_id)
    logical = f"{account.pk}:{key_value}"
    if Transaction.objects.filter(logical_transaction_id=logical).exclude(
            status=TransactionStatus.ARCHIVED).exists() or Transaction.objects.filter(
            logical_transaction_id=logical, version=1).exists():
        raise errors.DuplicateTransactionError(
            f"A transaction for {rule.match_key}={key_value} already exists on this account.")
    txn = Transaction(logical_transaction_id=logical, version=1, status=TransactionStatus.EXPECTED,
                      amount=staging.amount, currency=staging.currency, merchant_id=account.merchant_id, rule=rule,
                      source_staging_entry=staging, metadata={**_client_metadata(staging), rule.match_key: key_value})
    try:
        with transaction.atomic():
            txn.save(force_insert=True)
    except IntegrityError:
        raise errors.DuplicateTransactionError(
            f"A transaction for {rule.match_key}={key_value} already exists on this account.") from None
    meta = _entry_metadata(staging)
    legs = [
        Entry(transaction_id=txn.pk, account=account, entry_type=staging.entry_type, amount=staging.amount,
              currency=staging.currency, status=EntryStatus.POSTED, effective_date=staging.effective_date,
              metadata=meta),
        Entry(transaction_id=txn.pk, account=rule.account_two, entry_type=opposite(staging.entry_type),
              amount=staging.amount, currency=staging.currency, status=EntryStatus.EXPECTED,
              effective_date=staging.effective_date, metadata={**meta, rule.match_key: key_value}),
    ]
    _check_balanced([(e.entry_type, e.amount, e.currency) for e in legs])
    Entry.objects.bulk_create(legs)
    staging.metadata = {**_client_metadata(staging), "match_type": "NewTransactionGenerated"}
    staging.mark_processed(by=by, reason="new transaction generated")
    staging.save()
    if has_key:
        requeue_waiting(account_id=rule.account_two_id, match_key=rule.match_key, value=key_value, by=by)
    return txn


def _expected_with_key(rule: ReconRule, values: list) -> Q:
    """Entries (on the rule's account_two, of a transaction of the rule) whose match-key value is one of
    `values` (jsonb equality). For string values the search starts from the transactions' indexed logical ids:
    version 1 of a rule's transaction is `"{account_one}:{value}"`, built from the same value as its expected
    leg's key (`_process_transaction`), so the condition is the same and it needs no scan of the account's
    expected entries. Other JSON values (numbers compare by value) keep the plain metadata condition."""
    strings = [v for v in values if isinstance(v, str)]
    others = [v for v in values if not isinstance(v, str)]
    base = Q(transaction__rule_id=rule.pk, account_id=rule.account_two_id)
    q = Q()
    if strings:
        q |= base & Q(transaction__logical_transaction_id__any=_logical_ids(rule, strings),
                      **{f"metadata__{rule.match_key}__in": strings})
    if others:
        q |= base & Q(**{f"metadata__{rule.match_key}__in": others})
    return q


def _logical_ids(rule: ReconRule, strings: list) -> list[str]:
    return [f"{rule.account_one_id}:{v}" for v in strings]


def _candidates(staging: StagingEntry, rules: list[ReconRule]):
    q = Q()
    for rule in rules:
        value = staging.metadata.get(rule.match_key)
        if value in (None, ""):
            continue
        q |= _expected_with_key(rule, [value])
    if not q:
        return None
    return Entry.objects.filter(q, status=EntryStatus.EXPECTED, transaction__status=TransactionStatus.EXPECTED)


def _process_confirmation(staging: StagingEntry, by) -> None:
    """CONFIRMATION mode: count the candidates first, then fulfil the one that agrees."""
    _common_checks(staging)
    rules = list(ReconRule.objects.filter(account_two=staging.account).order_by("pk"))
    if not rules:
        raise errors.NoReconRuleFoundError(f"No recon rule has account {staging.account_id} as account_two.")
    candidates = _candidates(staging, rules)
    if candidates is None:
        raise errors.NoMatchFoundError("The entry has no value for the match key of any rule.")
    # Lock the candidate transactions in id order, then read the candidates again (fresh snapshot), so two
    # consumers never fulfil one expectation twice.
    list(Transaction.objects.filter(pk__in=Subquery(candidates.values("transaction_id")))
         .order_by("pk").select_for_update().values_list("pk", flat=True))
    found = list(candidates.select_related("transaction", "transaction__rule")[:2])
    if not found:
        raise errors.NoMatchFoundError("No expected entry matches this confirmation.")
    if len(found) > 1:
        raise errors.AmbiguousMatchError("More than one expected entry matches this confirmation.")
    expected = found[0]
    reasons = mismatch_reasons(staging, expected, expected.transaction.rule)
    if reasons:
        raise errors.MismatchError("; ".join(reasons), details={"_transaction": expected.transaction_id})
    done = fulfil(staging=staging, expected=expected, by=by)
    staging.metadata = {**_client_metadata(staging), "match_type": "Fulfilled"}
    staging.mark_processed(by=by, reason=f"fulfilled {done.old.logical_transaction_id}")
    staging.save()


class Fulfilment(NamedTuple):
    """Version+1 (POSTED) of `old`, decided and checked but not written: the old version's POSTED entries
    carried over (`carried`: [(old entry, new id)]), the staging entry's own leg (`leg_id`, metadata
    `leg_metadata`) and, when a tolerance applied, a difference leg (`difference_leg`: (id, account id, side,
    amount)) on the rule's difference account."""
    staging: StagingEntry
    old: Transaction
    new_id: str
    carried: list
    leg_id: str
    leg_metadata: dict
    difference: Decimal
    difference_leg: tuple | None


def plan_fulfilment(*, staging: StagingEntry, expected: Entry, old: Transaction, rule: ReconRule | None,
                    old_entries: list[Entry], difference_account_id=None) -> Fulfilment:
    """What fulfilling `expected` (a leg of `old`, whose live entries are `old_entries`) with `staging`
    writes; a difference goes to `difference_account_id` when given (an operator's write-off), else to the
    rule's difference account. Raises UnbalancedTransactionError when the legs cannot balance."""
    difference = staging.amount - expected.amount
    carried = [e for e in old_entries if e.status == EntryStatus.POSTED]
    new_id, leg_id, *ids = uuid7_texts(len(carried) + 3)  # the last one for a difference leg
    legs = [(e.entry_type, e.amount, e.currency) for e in carried]
    legs.append((staging.entry_type, staging.amount, staging.currency))
    difference_leg = None
    if difference:
        account_id = difference_account_id or (rule.difference_account_id if rule is not None else None)
        if account_id is None:
            raise errors.UnbalancedTransactionError("The amounts differ and the rule has no difference account.")
        side = opposite(staging.entry_type) if difference > 0 else staging.entry_type
        difference_leg = (ids.pop(), account_id, side, abs(difference))
        legs.append((side, abs(difference), staging.currency))
    _check_balanced(legs)
    return Fulfilment(staging, old, new_id, list(zip(carried, ids)), leg_id, _entry_metadata(staging), difference,
                      difference_leg)


def new_versions_insert(fulfilments: list[Fulfilment], now) -> None:
    """Inserts the new transaction versions of `fulfilments` (their old versions archived first by the caller,
    as one version per logical transaction may be open). On PostgreSQL one INSERT ... SELECT that copies the
    old rows' columns in the database; elsewhere model instances."""
    if not fulfilments:
        return
    if connection.vendor != "postgresql":
        Transaction.objects.bulk_create([Transaction(
            transaction_id=f.new_id, logical_transaction_id=f.old.logical_transaction_id, version=f.old.version + 1,
            status=TransactionStatus.POSTED, amount=f.old.amount, currency=f.old.currency,
            merchant_id=f.old.merchant_id, rule_id=f.old.rule_id, source_staging_entry_id=f.staging.pk,
            metadata={**f.old.metadata, **({"amount_difference": str(f.difference)} if f.difference else {})},
            created_at=now) for f in fulfilments])
        return
    columns = array_columns([(f.new_id, f.old.pk, f.staging.pk, f.difference or None) for f in fulfilments], 4)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Transaction._meta.db_table} (transaction_id, logical_transaction_id, version, status,"
            " amount, currency, merchant_id, rule_id, source_staging_entry_id, metadata, created_at)"
            " SELECT u.id, t.logical_transaction_id, t.version + 1, %s, t.amount, t.currency, t.merchant_id,"
            " t.rule_id, u.staging, CASE WHEN u.difference IS NULL THEN t.metadata"
            " ELSE t.metadata || jsonb_build_object('amount_difference', u.difference) END, %s"
            " FROM unnest(%s::uuid[], %s::uuid[], %s::uuid[], %s::text[]) AS u(id, old, staging, difference)"
            f" JOIN {Transaction._meta.db_table} AS t ON t.transaction_id = u.old",
            [TransactionStatus.POSTED, now, *columns])


def new_legs_insert(fulfilments: list[Fulfilment], now) -> None:
    """Inserts the legs of the new versions of `fulfilments` (after `new_versions_insert`): the carried-over
    entries copied from their old rows, the staging entries' legs from the staging rows. On PostgreSQL one
    INSERT ... SELECT; elsewhere model instances."""
    if not fulfilments:
        return
    if connection.vendor != "postgresql":
        legs = []
        for f in fulfilments:
            s = f.staging
            legs += [Entry(entry_id=new_id, transaction_id=f.new_id, account_id=e.account_id, entry_type=e.entry_type,
                           amount=e.amount, currency=e.currency, status=EntryStatus.POSTED,
                           effective_date=e.effective_date, metadata=e.metadata, created_at=now)
                     for e, new_id in f.carried]
            legs.append(Entry(entry_id=f.leg_id, transaction_id=f.new_id, account_id=s.account_id,
                              entry_type=s.entry_type, amount=s.amount, currency=s.currency, status=EntryStatus.POSTED,
                              effective_date=s.effective_date, metadata=f.leg_metadata, created_at=now))
            if f.difference_leg:
                leg_id, account_id, side, amount = f.difference_leg
                legs.append(Entry(entry_id=leg_id, transaction_id=f.new_id, account_id=account_id, entry_type=side,
                                  amount=amount, currency=s.currency, status=EntryStatus.POSTED,
                                  effective_date=s.effective_date, metadata={**f.leg_metadata, "difference": True},
                                  created_at=now))
        Entry.objects.bulk_create(legs)
        return
    carried = [(new_id, f.new_id, e.pk) for f in fulfilments for e, new_id in f.carried]
    own = []  # (id, transaction, staging entry, account, side, amount, metadata); None: the staging entry's
    for f in fulfilments:
        meta = to_json(f.leg_metadata)
        own.append((f.leg_id, f.new_id, f.staging.pk, None, None, None, meta))
        if f.difference_leg:
            leg_id, account_id, side, amount = f.difference_leg
            own.append((leg_id, f.new_id, f.staging.pk, account_id, side, amount,
                        to_json({**f.leg_metadata, "difference": True})))
    columns = array_columns(carried, 3) + array_columns(own, 7)
    entry, staging = Entry._meta.db_table, StagingEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {entry} (entry_id, transaction_id, account_id, entry_type, amount, currency, status,"
            " effective_date, metadata, created_at)"
            " SELECT u.id, u.txn, e.account_id, e.entry_type, e.amount, e.currency, %(status)s, e.effective_date,"
            " e.metadata, %(now)s"
            " FROM unnest(%(c0)s::uuid[], %(c1)s::uuid[], %(c2)s::uuid[]) AS u(id, txn, old)"
            f" JOIN {entry} AS e ON e.entry_id = u.old"
            " UNION ALL"
            " SELECT u.id, u.txn, coalesce(u.account, s.account_id), coalesce(u.side, s.entry_type),"
            " coalesce(u.amount, s.amount), s.currency, %(status)s, s.effective_date, u.metadata::jsonb, %(now)s"
            " FROM unnest(%(c3)s::uuid[], %(c4)s::uuid[], %(c5)s::uuid[], %(c6)s::uuid[], %(c7)s::text[],"
            " %(c8)s::numeric[], %(c9)s::text[]) AS u(id, txn, staging, account, side, amount, metadata)"
            f" JOIN {staging} AS s ON s.staging_entry_id = u.staging",
            {"status": EntryStatus.POSTED, "now": now, **{f"c{i}": c for i, c in enumerate(columns)}})


def fulfil(*, staging: StagingEntry, expected: Entry, by, reason: str = "fulfilled",
           difference_account_id=None) -> Fulfilment:
    """Archives the expected entry's transaction and all its entries and creates version+1 POSTED: the
    fulfilling entry, the carried-over posted entries, and a difference entry when a tolerance applied.
    Assumes the old transaction row is locked by the caller and the match was checked."""
    old = Transaction.objects.select_for_update(of=("self",)).select_related("rule").get(pk=expected.transaction_id)
    old_entries = list(Entry.objects.filter(transaction=old).exclude(status=EntryStatus.ARCHIVED).order_by("pk"))
    f = plan_fulfilment(staging=staging, expected=expected, old=old, rule=old.rule, old_entries=old_entries,
                        difference_account_id=difference_account_id)
    old.archive(by=by, reason=f"superseded by version {old.version + 1} ({reason})")
    old.save()
    Entry.objects.filter(pk__any=[e.pk for e in old_entries]).update(status=EntryStatus.ARCHIVED)
    audit.record_many(Entry, [(e.pk, e.status, EntryStatus.ARCHIVED) for e in old_entries], by=by,
                      reason=f"superseded by version {old.version + 1}")
    now = timezone.now()
    new_versions_insert([f], now)
    new_legs_insert([f], now)
    return f


# --- queueing ----------------------------------------------------------------------------------------

def task_spec(entry: StagingEntry, merchant_id: str) -> TaskSpec:
    """The PROCESS_STAGING_ENTRY task of an entry. The payload carries the mode, so `decide` needs no query."""
    return TaskSpec(TASK_TYPE, {"staging_entry_id": str(entry.pk), "mode": entry.processing_mode}, merchant_id)


def staging_entries_requeue(*, ids: list, by, reason: str, from_status: str = StagingStatus.NEEDS_MANUAL_REVIEW
                            ) -> int:
    """Moves the given staging entries (locked by the caller, in `from_status`) to PENDING with a fresh task
    each, clearing their previous outcome. Set-based; called inside `transaction.atomic()`."""
    rows = list(StagingEntry.objects.filter(pk__in=ids, status=from_status).select_related("account")
                .order_by("pk"))
    if not rows:
        return 0
    tasks = task_create_many([task_spec(r, r.account.merchant_id) for r in rows])
    for row, task in zip(rows, tasks):
        row.task_id = task.task_id
        row.metadata = _client_metadata(row)
    StagingEntry.objects.bulk_update(rows, ["task_id", "metadata"])
    StagingEntry.objects.filter(pk__in=[r.pk for r in rows], status=from_status).update(
        status=StagingStatus.PENDING, updated_at=timezone.now())
    audit.record_many(StagingEntry, [(r.pk, from_status, StagingStatus.PENDING) for r in rows], by=by, reason=reason)
    return len(rows)


def requeue_waiting(*, account_id, match_key: str, value, by) -> int:
    """An expectation for `match_key=value` appeared on `account_id`: confirmations in review with
    NoMatchFoundError for that value go back to PENDING with a new task, in the caller's transaction."""
    ids = list(StagingEntry.objects.filter(
        account_id=account_id, status=StagingStatus.NEEDS_MANUAL_REVIEW, processing_mode=ProcessingMode.CONFIRMATION,
        metadata__error_type="NoMatchFoundError", **{f"metadata__{match_key}": value},
    ).order_by("pk").select_for_update().values_list("pk", flat=True))
    if not ids:
        return 0
    return staging_entries_requeue(ids=ids, by=by, reason=f"expectation appeared for {match_key}={value}")


# --- set-based TRANSACTION mode ----------------------------------------------------------------------

def _locked_batch(staging_entry_ids: list, task_ids: list) -> list[StagingEntry]:
    """Locks the batch's staging entries in id order (with their accounts) and returns, in batch order, those
    still PENDING and owned by their task. Raises PermanentError when one does not exist (the worker then runs
    the tasks one by one, and the per-entry path fails that entry's task)."""
    ids = [str(s) for s in staging_entry_ids]
    rows = {str(e.pk): e for e in load_models(StagingEntry.objects.select_for_update().filter(pk__any=ids)
                                              .order_by("pk"))}
    if len(rows) != len(set(ids)):
        raise PermanentError("a staging entry of the batch does not exist")
    accounts, field = Account.objects.in_bulk({e.account_id for e in rows.values()}), StagingEntry.account.field
    for e in rows.values():
        field.set_cached_value(e, accounts[e.account_id])
    return [rows[s] for s, t in zip(ids, map(str, task_ids)) if rows[s].status == StagingStatus.PENDING
            and (rows[s].task_id is None or str(rows[s].task_id) == t)]


def transaction_entries_process_batch(*, staging_entry_ids: list, task_ids: list, by: str) -> dict:
    """Set-based TRANSACTION mode for a batch of tasks, with the same outcomes as processing them one by one
    in the given order (the claim order): a constant number of queries per batch. Called inside
    `transaction.atomic()` (the worker's); locks the staging entries in id order. Returns counts."""
    from django.contrib.contenttypes.models import ContentType

    entries = [e for e in _locked_batch(staging_entry_ids, task_ids)
               if e.processing_mode == ProcessingMode.TRANSACTION]
    if not entries:
        return {"processed": 0, "review": 0}
    account_ids = {e.account_id for e in entries}
    merchants = {e.account.merchant_id for e in entries}
    rules = {r.account_one_id: r for r in ReconRule.objects.filter(account_one_id__in=account_ids)}
    periods = list(ClosedPeriod.objects.filter(merchant_id__in=merchants, reopened_at__isnull=True)
                   .values_list("merchant_id", "start_date", "end_date"))

    def closed(merchant_id, when) -> bool:
        day = when.astimezone(dt.UTC).date()
        return any(m == merchant_id and start <= day <= end for m, start, end in periods)

    plan = []  # (entry, rule, key_value, has_key, logical)
    for e in entries:
        rule = rules.get(e.account_id)
        key_value = e.metadata.get(rule.match_key) if rule else None
        has_key = key_value not in (None, "")
        plan.append((e, rule, key_value if has_key else str(e.pk), has_key))
    logicals = {f"{e.account_id}:{kv}" for e, rule, kv, _ in plan if rule}
    taken = set(Transaction.objects.filter(logical_transaction_id__any=logicals)
                .values_list("logical_transaction_id", flat=True).distinct())

    now = timezone.now()
    txns, legs, waiting, outcomes = [], [], [], []  # outcomes: (entry, new_status, metadata, reason)
    for e, rule, key_value, has_key in plan:
        client = _client_metadata(e)
        try:
            if e.currency != e.account.currency:
                raise errors.CurrencyMismatchError(
                    f"Entry currency {e.currency} differs from the account's currency {e.account.currency}.")
            if closed(e.account.merchant_id, e.effective_date):
                raise errors.PeriodClosedError(
                    f"The effective date {e.effective_date.date()} lies in a closed period.")
            if rule is None:
                raise errors.NoReconRuleFoundError(f"No recon rule has account {e.account_id} as account_one.")
            logical = f"{e.account_id}:{key_value}"
            if logical in taken:
                raise errors.DuplicateTransactionError(
                    f"A transaction for {rule.match_key}={key_value} already exists on this account.")
        except errors.OutcomeError as exc:
            outcomes.append((e, StagingStatus.NEEDS_MANUAL_REVIEW,
                             {**client, "error": exc.message, "error_type": exc.error_type},
                             f"{exc.error_type}: {exc.message}"))
            continue
        taken.add(logical)
        txn_id, posted_id, expected_id = uuid7_texts(3)
        meta = _entry_metadata(e)
        txn = {"transaction_id": txn_id, "logical_transaction_id": logical, "version": 1,
               "status": TransactionStatus.EXPECTED, "amount": e.amount, "currency": e.currency,
               "merchant_id": e.account.merchant_id, "rule_id": rule.pk, "source_staging_entry_id": e.pk,
               "metadata": {**client, rule.match_key: key_value}, "created_at": now}
        leg = {"transaction_id": txn_id, "amount": e.amount, "currency": e.currency,
               "effective_date": e.effective_date, "created_at": now}
        pair = [{**leg, "entry_id": posted_id, "account_id": e.account_id, "entry_type": e.entry_type,
                 "status": EntryStatus.POSTED, "metadata": meta},
                {**leg, "entry_id": expected_id, "account_id": rule.account_two_id,
                 "entry_type": opposite(e.entry_type), "status": EntryStatus.EXPECTED,
                 "metadata": {**meta, rule.match_key: key_value}}]
        _check_balanced([(x["entry_type"], x["amount"], x["currency"]) for x in pair])
        txns.append(txn)
        legs += pair
        if has_key:
            waiting.append((rule.account_two_id, rule.match_key, key_value))
        outcomes.append((e, StagingStatus.PROCESSED, {**client, "match_type": "NewTransactionGenerated"},
                         "new transaction generated"))

    insert_rows(Transaction, txns)
    _staging_outcomes_write(outcomes, now)
    ct = ContentType.objects.get_for_model(StagingEntry)
    audit.record_rows([(ct.pk, e.pk, StagingStatus.PENDING, status, reason) for e, status, _, reason in outcomes],
                      by=by, at=now)
    if waiting:
        ids = _waiting_confirmations(waiting)
        if ids:
            staging_entries_requeue(ids=ids, by=by, reason="expectation appeared")
    insert_rows(Entry, legs)  # last: it locks the accounts' running-balance rows until commit
    return {"processed": len(txns), "review": len(outcomes) - len(txns)}


# --- set-based CONFIRMATION mode ---------------------------------------------------------------------

class BatchFallback(Exception):
    """The batch holds a rare case the set-based path does not handle; the worker rolls the batch back and
    runs its tasks one by one (same outcomes, more queries)."""


def _key_form(value):
    """A hashable form of a match-key value that is equal exactly when the jsonb values are equal (numbers by
    value, booleans apart from numbers), or None for objects and arrays (left to the per-entry path)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", Decimal(str(value)))
    if isinstance(value, str):
        return ("s", value)
    return None


def confirmation_entries_process_batch(*, staging_entry_ids: list, task_ids: list, by: str) -> dict:
    """Set-based CONFIRMATION mode for a batch of tasks, with the same outcomes as `staging_entry_process` one
    by one in the given (claim) order, in a constant number of queries per batch. Called inside
    `transaction.atomic()` (the worker's). Locks the staging entries in id order, then every candidate
    transaction of the batch in id order (the lock order of the per-entry path), reads the candidates again
    and replays the batch in claim order in memory: a fulfilment or a mismatch takes the transaction out of
    the EXPECTED candidates of the entries after it. Raises `BatchFallback` (the worker then runs the tasks one
    by one) for the rare cases it leaves to the per-entry path: a staging entry twice in the batch, an entry
    that is not in CONFIRMATION mode, a match-key value that is an object or an array. Returns counts."""
    from django.contrib.contenttypes.models import ContentType

    ids = [str(s) for s in staging_entry_ids]
    if len(set(ids)) != len(ids):
        raise BatchFallback("a staging entry appears twice in the batch")
    entries = _locked_batch(ids, task_ids)
    if not entries:
        return {"processed": 0, "review": 0}
    if any(e.processing_mode != ProcessingMode.CONFIRMATION for e in entries):
        raise BatchFallback("an entry of the batch is not in CONFIRMATION mode")
    rules_of: dict = defaultdict(list)
    for rule in ReconRule.objects.filter(account_two_id__in={e.account_id for e in entries}).order_by("pk"):
        rules_of[rule.account_two_id].append(rule)
    rules = {r.pk: r for rs in rules_of.values() for r in rs}
    periods = list(ClosedPeriod.objects.filter(merchant_id__in={e.account.merchant_id for e in entries},
                                               reopened_at__isnull=True)
                   .values_list("merchant_id", "start_date", "end_date"))

    def closed(merchant_id, when) -> bool:
        day = when.astimezone(dt.UTC).date()
        return any(m == merchant_id and start <= day <= end for m, start, end in periods)

    # Per entry, in the per-entry path's order: the currency check, the closed period, the rules, the keys.
    plan = []  # (entry, error or None, [(rule_id, key form)])
    wanted: dict = defaultdict(list)  # rule id -> key values of the batch
    for e in entries:
        error, keys = None, []
        if e.currency != e.account.currency:
            error = errors.CurrencyMismatchError(
                f"Entry currency {e.currency} differs from the account's currency {e.account.currency}.")
        elif closed(e.account.merchant_id, e.effective_date):
            error = errors.PeriodClosedError(f"The effective date {e.effective_date.date()} lies in a closed period.")
        elif not rules_of.get(e.account_id):
            error = errors.NoReconRuleFoundError(f"No recon rule has account {e.account_id} as account_two.")
        else:
            for rule in rules_of[e.account_id]:
                value = e.metadata.get(rule.match_key)
                if value in (None, ""):
                    continue
                form = _key_form(value)
                if form is None:
                    raise BatchFallback(f"match key {rule.match_key} holds an object or an array")
                keys.append((rule.pk, form))
                wanted[rule.pk].append(value)
            if not keys:
                error = errors.NoMatchFoundError("The entry has no value for the match key of any rule.")
        plan.append((e, error, keys))

    # Lock every candidate transaction of the batch in id order, then read their live entries again (a fresh
    # snapshot: a transaction another consumer fulfilled meanwhile is no longer EXPECTED).
    by_key: dict = defaultdict(list)  # (rule id, key form) -> candidate EXPECTED entries, by id
    live: dict = defaultdict(list)  # transaction id -> its entries that are not ARCHIVED, by id
    if wanted:
        # The transactions themselves for string keys (their logical ids, indexed); through the expected entries
        # for other values. A superset of the candidates is fine: the replay below checks every entry.
        q = Q()
        for rule_id, values in wanted.items():
            rule = rules[rule_id]
            strings = [v for v in values if isinstance(v, str)]
            if strings:
                q |= Q(rule_id=rule.pk, logical_transaction_id__any=_logical_ids(rule, strings))
            if len(strings) < len(values):
                q |= Q(pk__in=Subquery(Entry.objects.filter(
                    _expected_with_key(rule, [v for v in values if not isinstance(v, str)]),
                    status=EntryStatus.EXPECTED).values("transaction_id")))
        txns = {t.pk: t for t in load_models(Transaction.objects.filter(q, status=TransactionStatus.EXPECTED)
                                             .order_by("pk").select_for_update())}
        # Not ordered by the database (that tempts the planner into a primary-key walk): by id, in memory.
        for row in sorted(load_models(Entry.objects.filter(transaction_id__any=list(txns))
                                      .exclude(status=EntryStatus.ARCHIVED)), key=attrgetter("pk")):
            row.transaction = txn = txns[row.transaction_id]
            live[row.transaction_id].append(row)
            rule = rules.get(txn.rule_id)
            if (rule is None or row.status != EntryStatus.EXPECTED or txn.status != TransactionStatus.EXPECTED
                    or row.account_id != rule.account_two_id):
                continue
            form = _key_form(row.metadata.get(rule.match_key))
            if form is not None:
                by_key[(rule.pk, form)].append(row)

    now = timezone.now()
    gone = set()  # transactions fulfilled or put in MISMATCH by an earlier entry of the batch
    fulfilments, archived_txns, archived_entries, mismatched = [], [], [], []
    outcomes = []  # (entry, new status, metadata, reason)
    for e, error, keys in plan:
        client = _client_metadata(e)
        try:
            if error is not None:
                raise error
            found = [c for k in keys for c in by_key.get(k, ()) if c.transaction_id not in gone]
            if not found:
                raise errors.NoMatchFoundError("No expected entry matches this confirmation.")
            if len(found) > 1:
                raise errors.AmbiguousMatchError("More than one expected entry matches this confirmation.")
            expected = found[0]
            old, rule = expected.transaction, rules[expected.transaction.rule_id]
            reasons = mismatch_reasons(e, expected, rule)
            if reasons:
                raise errors.MismatchError("; ".join(reasons), details={"_transaction": old.pk})
            done = plan_fulfilment(staging=e, expected=expected, old=old, rule=rule, old_entries=live[old.pk])
        except errors.OutcomeError as exc:
            mismatch = exc.details.pop("_transaction", None) if isinstance(exc, errors.MismatchError) else None
            outcomes.append((e, StagingStatus.NEEDS_MANUAL_REVIEW,
                             {**client, "error": exc.message, "error_type": exc.error_type},
                             f"{exc.error_type}: {exc.message}"))
            if mismatch is not None:
                gone.add(mismatch)
                e.mismatch_transaction_id = mismatch
                mismatched.append((mismatch, f"staging entry {e.pk}: {exc.message}"))
            continue
        gone.add(old.pk)
        fulfilments.append(done)
        archived_txns.append((old.pk, old.status, f"superseded by version {old.version + 1} (fulfilled)"))
        archived_entries += [(x.pk, x.status, f"superseded by version {old.version + 1}") for x in live[old.pk]]
        outcomes.append((e, StagingStatus.PROCESSED, {**client, "match_type": "Fulfilled"},
                         f"fulfilled {old.logical_transaction_id}"))

    # Writes: old versions out of the way first (one open version per logical transaction), then the new ones.
    for pks, target in (([t[0] for t in archived_txns], TransactionStatus.ARCHIVED),
                        ([m[0] for m in mismatched], TransactionStatus.MISMATCH)):
        if pks and Transaction.objects.filter(pk__any=pks, status=TransactionStatus.EXPECTED).update(
                status=target) != len(pks):
            raise BatchFallback("a candidate transaction changed under its lock")
    new_versions_insert(fulfilments, now)
    _staging_outcomes_write(outcomes, now)
    # The audit rows of every change, each with its own reason, in one COPY.
    ct_staging, ct_txn, ct_entry = (ContentType.objects.get_for_model(m) for m in (StagingEntry, Transaction, Entry))
    rows = [(ct_txn.pk, pk, src, TransactionStatus.ARCHIVED, reason) for pk, src, reason in archived_txns]
    rows += [(ct_entry.pk, pk, src, EntryStatus.ARCHIVED, reason) for pk, src, reason in archived_entries]
    rows += [(ct_txn.pk, pk, TransactionStatus.EXPECTED, TransactionStatus.MISMATCH, reason)
             for pk, reason in mismatched]
    rows += [(ct_staging.pk, e.pk, StagingStatus.PENDING, status, reason) for e, status, _, reason in outcomes]
    audit.record_rows(rows, by=by, at=now)
    # Entry writes last: they update the accounts' running balances (`recon_account_balance`), whose rows stay
    # locked until commit, so another consumer on the same accounts waits only for the tail of this batch.
    if archived_entries:
        Entry.objects.filter(pk__any=[a[0] for a in archived_entries]).update(status=EntryStatus.ARCHIVED)
    new_legs_insert(fulfilments, now)
    return {"processed": len(fulfilments), "review": len(outcomes) - len(fulfilments)}


def _staging_outcomes_write(outcomes: list, now) -> None:
    """Writes the outcomes [(entry, new status, metadata, reason)] of PENDING staging entries (status, metadata,
    discarded_at when PROCESSED, mismatch_transaction): on PostgreSQL one UPDATE ... FROM unnest(arrays)
    filtered on the source state; elsewhere bulk_update and one UPDATE per target status."""
    for e, status, metadata, _ in outcomes:
        e.metadata = metadata
        e.discarded_at = now if status == StagingStatus.PROCESSED else None
    if not outcomes:
        return
    if connection.vendor != "postgresql":
        StagingEntry.objects.bulk_update([o[0] for o in outcomes], ["metadata", "discarded_at", "mismatch_transaction"])
        for status in (StagingStatus.PROCESSED, StagingStatus.NEEDS_MANUAL_REVIEW):
            pks = [o[0].pk for o in outcomes if o[1] == status]
            if pks:
                StagingEntry.objects.filter(pk__in=pks, status=StagingStatus.PENDING).update(status=status,
                                                                                             updated_at=now)
        return
    table = StagingEntry._meta.db_table
    columns = array_columns([(e.pk, status, to_json(e.metadata), e.discarded_at, e.mismatch_transaction_id)
                             for e, status, _, _ in outcomes], 5)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS s SET status = u.status, metadata = u.metadata::jsonb, discarded_at = u.discarded_at,"
            " mismatch_transaction_id = u.mismatch, updated_at = %s"
            " FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::timestamptz[], %s::uuid[])"
            " AS u(id, status, metadata, discarded_at, mismatch)"
            " WHERE s.staging_entry_id = u.id AND s.status = %s", [now, *columns, StagingStatus.PENDING])
        if cursor.rowcount != len(outcomes):
            raise BatchFallback("a staging entry of the batch changed under its lock")


def _waiting_confirmations(waiting: list) -> list:
    """Ids (locked, in id order) of the confirmations in review with NoMatchFoundError whose match-key value
    is one of `waiting` [(account id, match key, value)]: one query (jsonb equality, as `metadata__key=value`)."""
    if connection.vendor != "postgresql":
        q = Q()
        for account_id, match_key, value in waiting:
            q |= Q(account_id=account_id, **{f"metadata__{match_key}": value})
        return list(StagingEntry.objects.filter(q, status=StagingStatus.NEEDS_MANUAL_REVIEW,
                                                processing_mode=ProcessingMode.CONFIRMATION,
                                                metadata__error_type="NoMatchFoundError")
                    .order_by("pk").select_for_update().values_list("pk", flat=True))
    accounts, keys, values = array_columns([(a, k, to_json(v)) for a, k, v in waiting], 3)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT s.staging_entry_id FROM {StagingEntry._meta.db_table} AS s"
            " WHERE s.account_id = ANY(%s::uuid[]) AND s.status = %s AND s.processing_mode = %s"
            " AND s.metadata ->> 'error_type' = 'NoMatchFoundError'"
            " AND EXISTS (SELECT 1 FROM unnest(%s::uuid[], %s::text[], %s::jsonb[]) AS w(account_id, k, v)"
            " WHERE s.account_id = w.account_id AND s.metadata -> w.k = w.v)"
            " ORDER BY s.staging_entry_id FOR UPDATE",
            [array_literal(sorted({a for a, _, _ in waiting})), StagingStatus.NEEDS_MANUAL_REVIEW,
             ProcessingMode.CONFIRMATION, accounts, keys, values])
        return [row[0] for row in cursor.fetchall()]
