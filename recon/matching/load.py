"""Load: lock and read what a batch is decided from, in a fixed order (the staging entries by id, then the
candidate transactions by id), in a constant number of queries per batch.

Called inside `transaction.atomic()`; the locks are held until the caller commits."""

import contextlib
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection
from django.db.models import Q, Subquery

from recon import errors, queries
from recon.matching.decide import (
    Batch,
    Period,
    confirmation_value,
    group_text,
    has_value,
    key_form,
    logical_id,
    utc_day,
)
from recon.models import (
    Account,
    ClosedPeriod,
    Entry,
    EntryStatus,
    MatchMode,
    ProcessingMode,
    ReconRule,
    StagingEntry,
    StagingStatus,
    Transaction,
    TransactionStatus,
)
from tracker.bulk import load_models
from tracker.errors import PermanentError

FORCED = "FORCED"  # the mode of an operator's forced match
LOCK_ROUNDS = 3  # candidate locks per batch, at most (see _load_candidates)


class WorkItem(NamedTuple):
    """One staging entry to process: by the task `task_id` (None: whoever holds it), or, with `target_entry_id`,
    an operator's forced match with that expected leg."""

    staging_entry_id: Any
    task_id: Any = None
    target_entry_id: Any = None


class MissingEntryError(PermanentError):
    """A staging entry of the batch does not exist."""


@contextlib.contextmanager
def batch_plan() -> Iterator[None]:
    """The engine's plan settings (queries.ENGINE_PLAN: index lookups by id, whatever the tables' statistics say)
    for the statements run inside, restored afterwards. Called inside `transaction.atomic()`: the settings are
    local to it, so an exception that rolls it back restores them too."""
    with connection.cursor() as cursor:
        cursor.execute(queries.ENGINE_PLAN)
        seqscan, hashjoin, *_ = cursor.fetchone()
    yield
    with connection.cursor() as cursor:
        cursor.execute(queries.ENGINE_PLAN_RESTORE, {"seqscan": seqscan, "hashjoin": hashjoin})


def entries_lock(items: Sequence[WorkItem]) -> list[tuple[WorkItem, StagingEntry]]:
    """Locks the items' staging entries in id order (their accounts cached) and returns, in batch order and once
    each, the decidable ones: PENDING and owned by the item's task, or NEEDS_MANUAL_REVIEW for a forced match.
    Raises MissingEntryError when one does not exist."""
    ids = [str(item.staging_entry_id) for item in items]
    rows = {
        str(e.pk): e for e in load_models(StagingEntry.objects.select_for_update().filter(pk__any=ids).order_by("pk"))
    }
    if len(rows) != len(set(ids)):
        missing = sorted(set(ids) - set(rows))
        raise MissingEntryError(f"staging entry {', '.join(missing)} does not exist")
    accounts, field = Account.objects.in_bulk({e.account_id for e in rows.values()}), StagingEntry.account.field
    for e in rows.values():
        field.set_cached_value(e, accounts[e.account_id])
    out, seen = [], set()
    for item, key in zip(items, ids):
        entry = rows[key]
        if key not in seen and _decidable(item, entry):
            seen.add(key)
            out.append((item, entry))
    return out


def _decidable(item: WorkItem, entry: StagingEntry) -> bool:
    if item.target_entry_id is not None:
        return entry.status == StagingStatus.NEEDS_MANUAL_REVIEW
    if entry.status != StagingStatus.PENDING:
        return False
    return item.task_id is None or entry.task_id is None or str(entry.task_id) == str(item.task_id)


def closed_periods(merchant_ids: Iterable[str]) -> list[Period]:
    """The merchants' closed (not reopened) periods."""
    return list(
        ClosedPeriod.objects.filter(merchant_id__in=set(merchant_ids), reopened_at__isnull=True).values_list(
            "merchant_id", "start_date", "end_date"
        )
    )


def period_is_closed(*, merchant_id: str, when: dt.datetime | dt.date) -> bool:
    """True when `when` (its UTC date) lies in a closed (not reopened) period of the merchant."""
    day = utc_day(when) if isinstance(when, dt.datetime) else when
    return ClosedPeriod.objects.filter(
        merchant_id=merchant_id, reopened_at__isnull=True, start_date__lte=day, end_date__gte=day
    ).exists()


def batch_load(*, mode: str, pairs: list[tuple[WorkItem, StagingEntry]], reason: str = "") -> Batch:
    """The `Batch` of one mode (TRANSACTION, CONFIRMATION or FORCED) for entries locked by `entries_lock`."""
    entries = [entry for _, entry in pairs]
    batch = Batch(
        mode=mode, entries=entries, periods=closed_periods(e.account.merchant_id for e in entries), reason=reason
    )
    accounts = {e.account_id for e in entries}
    if mode == ProcessingMode.TRANSACTION:
        batch.rules = {r.pk: r for r in ReconRule.objects.filter(account_one_id__in=accounts)}
        rule_of = {r.account_one_id: r for r in batch.rules.values()}
        logicals = [logical_id(e.account_id, _transaction_key(e, rule_of.get(e.account_id))) for e in entries]
        batch.taken = set(
            Transaction.objects.filter(logical_transaction_id__any=logicals)
            .values_list("logical_transaction_id", flat=True)
            .distinct()
        )
    elif mode == ProcessingMode.CONFIRMATION:
        batch.rules = {r.pk: r for r in ReconRule.objects.filter(account_two_id__in=accounts).order_by("pk")}
        batch.group_max = settings.RECON_GROUP_MAX
        _load_candidates(batch)
    else:
        _load_forced(batch, pairs)
    return batch


def _transaction_key(entry: StagingEntry, rule: ReconRule | None) -> object:
    value = entry.metadata.get(rule.match_key) if rule else None
    return value if has_value(value) else entry.staging_entry_id


def expected_with_key(rule: ReconRule, values: list) -> Q:
    """Legs (on the rule's account_two, of a transaction of the rule) whose match-key value is one of `values`
    (jsonb equality). String values start from the transactions' indexed logical ids (`logical_id`); other JSON
    values (numbers compare by value, objects, arrays) keep the plain metadata condition."""
    strings = [v for v in values if isinstance(v, str)]
    others = [v for v in values if not isinstance(v, str)]
    base = Q(transaction__rule_id=rule.pk, account_id=rule.account_two_id)
    q = Q()
    if strings:
        q |= base & Q(
            transaction__logical_transaction_id__any=[logical_id(rule.account_one_id, v) for v in strings],
            **{f"metadata__{rule.match_key}__in": strings},
        )
    if others:
        q |= base & Q(**{f"metadata__{rule.match_key}__in": others})
    return q


def _candidate_transactions(batch: Batch) -> Q | None:
    """A superset of the batch's candidate transactions (decide checks every leg): by logical id for string key
    values, through the expected legs for the others; a one_to_many rule's open groups by their group value."""
    wanted: dict = defaultdict(list)  # rule id -> the batch's key values
    for entry in batch.entries:
        for rule in batch.rules.values():
            value = confirmation_value(rule, entry)
            if rule.account_two_id == entry.account_id and has_value(value):
                wanted[rule.pk].append(value)
    q = Q()
    for rule_id, values in wanted.items():
        rule = batch.rules[rule_id]
        if rule.match_mode == MatchMode.ONE_TO_MANY:
            q |= Q(rule_id=rule.pk, group_value__in=sorted({group_text(v) for v in values}))
        strings = [v for v in values if isinstance(v, str)]
        if strings:
            q |= Q(rule_id=rule.pk, logical_transaction_id__any=[logical_id(rule.account_one_id, v) for v in strings])
        if len(strings) < len(values):
            q |= Q(
                pk__in=Subquery(
                    Entry.objects.filter(
                        expected_with_key(rule, [v for v in values if not isinstance(v, str)]),
                        status=EntryStatus.EXPECTED,
                    ).values("transaction_id")
                )
            )
    return q or None


def _load_candidates(batch: Batch) -> None:
    """Locks every candidate transaction in id order, then reads their live legs (a fresh snapshot: a
    transaction another consumer fulfilled meanwhile is no longer EXPECTED)."""
    q = _candidate_transactions(batch)
    if q is None:
        return
    open_ = Transaction.objects.filter(q, status=TransactionStatus.EXPECTED)
    for _ in range(LOCK_ROUNDS):
        txns = {t.pk: t for t in load_models(open_.order_by("pk").select_for_update())}
        # A consumer we waited for may have written a new open version (an instalment's remainder), which the
        # locking statement's snapshot did not see: lock again until a fresh read finds nothing new.
        if set(open_.values_list("pk", flat=True)) <= set(txns):
            break
    batch.transactions = txns
    if not txns:
        return
    candidates: dict = defaultdict(list)
    groups: dict = defaultdict(list)
    # Not ordered by the database (that tempts the planner into a primary-key walk): by id, in memory.
    for leg in sorted(
        load_models(Entry.objects.filter(transaction_id__any=list(txns)).exclude(status=EntryStatus.ARCHIVED)),
        key=attrgetter("pk"),
    ):
        leg.transaction = txn = txns[leg.transaction_id]
        batch.live.setdefault(leg.transaction_id, []).append(leg)
        rule = batch.rules.get(txn.rule_id)
        if rule is not None and leg.status == EntryStatus.EXPECTED and leg.account_id == rule.account_two_id:
            value = leg.metadata.get(rule.match_key)
            if has_value(value):
                candidates[(rule.pk, key_form(value))].append(leg)
            if rule.match_mode == MatchMode.ONE_TO_MANY and txn.group_value is not None:
                groups[(rule.pk, txn.group_value)].append(leg)
    batch.candidates, batch.groups = dict(candidates), dict(groups)


def _load_forced(batch: Batch, pairs: list[tuple[WorkItem, StagingEntry]]) -> None:
    """The operator's chosen legs (on the entry's account, else NotFoundError), their transactions and the ones
    the entries put in MISMATCH, locked in id order, then the chosen legs and live legs read again."""
    wanted = {item.target_entry_id: entry for item, entry in pairs}
    legs = {str(leg.pk): leg for leg in Entry.objects.filter(pk__in=list(wanted))}
    txn_ids = set()
    for target_id, entry in wanted.items():
        leg = legs.get(str(target_id))
        if leg is None or leg.account_id != entry.account_id:
            raise errors.NotFoundError("Entry not found on this account.")
        txn_ids.add(leg.transaction_id)
        if entry.mismatch_transaction_id:
            txn_ids.add(entry.mismatch_transaction_id)
    txns = {t.pk: t for t in Transaction.objects.filter(pk__in=txn_ids).order_by("pk").select_for_update()}
    batch.transactions = txns
    batch.rules = ReconRule.objects.in_bulk({t.rule_id for t in txns.values() if t.rule_id})
    fresh = {}
    for leg in Entry.objects.filter(transaction_id__in=txn_ids).order_by("pk"):
        leg.transaction = txns[leg.transaction_id]
        fresh[str(leg.pk)] = leg
        if leg.status != EntryStatus.ARCHIVED:
            batch.live.setdefault(leg.transaction_id, []).append(leg)
    for target_id, entry in wanted.items():
        batch.targets[entry.pk] = fresh[str(target_id)]
