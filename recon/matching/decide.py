"""Decide: the outcome of every staging entry of a loaded batch, by pure functions.

Nothing here touches the database. The input is a `Batch` (what `recon.matching.load` read and locked), the output
a `Plan` (what `recon.matching.write` writes). Entries are decided in batch order, each seeing the effects of the
ones before it (a transaction fulfilled or put in MISMATCH is no longer a candidate, a logical id created is
taken), so one batch of N decides what N batches of one would."""

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from recon import errors
from recon.models import (
    MONEY_QUANTUM,
    Entry,
    EntryStatus,
    ProcessingMode,
    ReconRule,
    Side,
    StagingEntry,
    StagingStatus,
    Transaction,
    TransactionStatus,
    opposite,
)
from tracker.ids import uuid7_texts

# Metadata keys the engine writes on a staging entry; everything else in its metadata is the client's.
OUTCOME_KEYS = ("match_type", "error", "error_type")
MATCH_CREATED = "NewTransactionGenerated"
MATCH_FULFILLED = "Fulfilled"
SECONDS_PER_DAY = 86400
# `logical_transaction_id` is "{account_one}:{match-key value}" in a column of this many characters.
LOGICAL_ID_MAX_LENGTH: int = Transaction._meta.get_field("logical_transaction_id").max_length or 0

IdSource = Callable[[int], list[str]]
Period = tuple[str, dt.date, dt.date]  # (merchant id, first day, last day) of a closed period
KeyForm = Hashable


@dataclass
class Batch:
    """What one pass of the engine decides from, all of one kind (`mode`: TRANSACTION, CONFIRMATION or FORCED).
    `entries` are locked and decidable (PENDING and owned by their task; NEEDS_MANUAL_REVIEW for FORCED), in batch
    order, each with its account cached. `rules` by id; `periods` the merchants' closed periods. TRANSACTION:
    `taken` holds every logical id that already has a version. CONFIRMATION: `candidates` maps (rule id, key form)
    to the EXPECTED legs (of EXPECTED transactions, by id) with that match-key value, `live` every transaction's
    legs that are not ARCHIVED; each leg has its transaction cached. FORCED: `targets` maps a staging entry id to
    the expected leg the operator chose, `transactions` the locked transactions by id."""

    mode: str
    entries: list[StagingEntry]
    rules: dict[Any, ReconRule] = field(default_factory=dict)
    periods: list[Period] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    candidates: dict[tuple[Any, KeyForm], list[Entry]] = field(default_factory=dict)
    live: dict[Any, list[Entry]] = field(default_factory=dict)
    targets: dict[Any, Entry] = field(default_factory=dict)
    transactions: dict[Any, Transaction] = field(default_factory=dict)
    reason: str = ""  # the operator's reason (FORCED)
    write_off: bool = False  # FORCED: book the whole difference, whatever the tolerance
    difference_account_id: Any = None  # FORCED with write_off: where, when the rule has no difference account


@dataclass(frozen=True)
class Outcome:
    """A staging entry's move (`from_status` -> `to_status`) with its new metadata and audit reason;
    `mismatch_transaction_id` is the transaction it put in MISMATCH (None clears it)."""

    entry: StagingEntry
    to_status: str
    metadata: dict
    reason: str
    from_status: str = StagingStatus.PENDING
    mismatch_transaction_id: Any = None


@dataclass(frozen=True)
class Created:
    """Version 1 of a transaction (TRANSACTION mode) as rows: the transaction and its two legs, and the
    (account_two, match key, value) whose waiting confirmations its expectation may now match (None without a
    key value)."""

    transaction: dict
    legs: list[dict]
    waiting: tuple | None


@dataclass(frozen=True)
class Fulfilment:
    """Version+1 (POSTED) of `old`: the old version's POSTED legs carried over (`carried`: [(old leg, new id)]),
    the staging entry's own leg (`leg_id`, `leg_metadata`) and, when a tolerance applied, a difference leg
    (`difference_leg`: (id, account id, side, amount)) on the rule's difference account. `old_legs` are the old
    version's live legs (archived with it), `why` the words of its audit reason."""

    staging: StagingEntry
    old: Transaction
    old_legs: list[Entry]
    new_id: str
    carried: list[tuple[Entry, str]]
    leg_id: str
    leg_metadata: dict
    difference: Decimal
    difference_leg: tuple | None
    why: str = "fulfilled"


@dataclass
class Plan:
    """Everything a batch writes: staging outcomes, new versions 1, fulfilments, transactions put in MISMATCH and
    transactions reopened (MISMATCH -> EXPECTED), each [(transaction id, reason)]."""

    outcomes: list[Outcome] = field(default_factory=list)
    created: list[Created] = field(default_factory=list)
    fulfilments: list[Fulfilment] = field(default_factory=list)
    mismatched: list[tuple[Any, str]] = field(default_factory=list)
    reopened: list[tuple[Any, str]] = field(default_factory=list)

    def counts(self) -> dict:
        processed = sum(o.to_status == StagingStatus.PROCESSED for o in self.outcomes)
        return {"processed": processed, "review": len(self.outcomes) - processed}


# --- rules shared by every mode ------------------------------------------------------------------------


def client_metadata(entry: StagingEntry) -> dict:
    """The entry's metadata without the engine's outcome keys."""
    return {k: v for k, v in entry.metadata.items() if k not in OUTCOME_KEYS}


def leg_metadata(entry: StagingEntry) -> dict:
    """The metadata of a leg booked from `entry`: its client metadata and where it came from."""
    return {**client_metadata(entry), "source_staging_entry_id": str(entry.staging_entry_id)}


def utc_day(when: dt.datetime) -> dt.date:
    return when.astimezone(dt.UTC).date()


def in_closed_period(periods: Iterable[Period], merchant_id: str, when: dt.datetime) -> bool:
    day = utc_day(when)
    return any(m == merchant_id and start <= day <= end for m, start, end in periods)


def entry_problem(entry: StagingEntry, periods: Iterable[Period]) -> errors.OutcomeError | None:
    """The checks every entry passes first, in this order: its account's currency, then closed periods."""
    account = entry.account
    if entry.currency != account.currency:
        return errors.CurrencyMismatchError(
            f"Entry currency {entry.currency} differs from the account's currency {account.currency}."
        )
    if in_closed_period(periods, account.merchant_id, entry.effective_date):
        return errors.PeriodClosedError(f"The effective date {entry.effective_date.date()} lies in a closed period.")
    return None


def no_rule(entry: StagingEntry, role: str) -> errors.NoReconRuleFoundError:
    return errors.NoReconRuleFoundError(f"No recon rule has account {entry.account_id} as {role}.")


def review(entry: StagingEntry, exc: errors.OutcomeError, *, mismatch: Any = None) -> Outcome:
    return Outcome(
        entry,
        StagingStatus.NEEDS_MANUAL_REVIEW,
        {**client_metadata(entry), "error": exc.message, "error_type": exc.error_type},
        f"{exc.error_type}: {exc.message}",
        mismatch_transaction_id=mismatch,
    )


def has_value(value: object) -> bool:
    return value not in (None, "")


def check_balanced(legs: Iterable[tuple[str, Decimal, str]]) -> None:
    """Raises UnbalancedTransactionError unless the (side, amount, currency) legs are positive and balance per
    currency."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    positive = True
    for side, amount, currency in legs:
        totals[currency] += amount if side == Side.DEBIT else -amount
        positive = positive and amount > 0
    if not positive or any(v != 0 for v in totals.values()):
        raise errors.UnbalancedTransactionError(
            "The resulting transaction would not balance: " + ", ".join(f"{c} {v}" for c, v in totals.items())
        )


def allowed_difference(rule: ReconRule | None, expected_amount: Decimal) -> Decimal:
    """The largest amount difference a rule accepts: the larger of its absolute and percent tolerance."""
    if rule is None:
        return Decimal(0)
    pct = (expected_amount * rule.amount_tolerance_pct / Decimal(100)).quantize(MONEY_QUANTUM)
    return max(rule.amount_tolerance, pct)


def agreement_problems(
    staging: StagingEntry,
    expected: Entry,
    rule: ReconRule | None,
    *,
    amount_words: str = "amount differs",
    check_amount: bool = True,
) -> list[str]:
    """What differs between a confirmation and an expected leg in side, currency, or amount beyond the rule's
    tolerance (the checks an operator's forced match must pass too)."""
    reasons = []
    if expected.entry_type != staging.entry_type:
        reasons.append(f"side differs: expected {expected.entry_type}, got {staging.entry_type}")
    if expected.currency != staging.currency:
        reasons.append(f"currency differs: expected {expected.currency}, got {staging.currency}")
    if check_amount and abs(staging.amount - expected.amount) > allowed_difference(rule, expected.amount):
        reasons.append(f"{amount_words}: expected {expected.amount}, got {staging.amount}")
    return reasons


def mismatch_reasons(staging: StagingEntry, expected: Entry, rule: ReconRule | None) -> list[str]:
    """`agreement_problems`, and the rule's date window; empty when they agree."""
    reasons = agreement_problems(staging, expected, rule)
    if rule and rule.date_window_days is not None:
        days = abs((staging.effective_date - expected.effective_date).total_seconds()) / SECONDS_PER_DAY
        if days > rule.date_window_days:
            reasons.append(
                f"date outside the {rule.date_window_days}-day window: expected "
                f"{expected.effective_date.date()}, got {staging.effective_date.date()}"
            )
    return reasons


def key_form(value: object) -> KeyForm:
    """A hashable form of a JSON match-key value, equal exactly when the jsonb values are equal: numbers by value
    (1 and 1.0 alike), booleans apart from numbers, objects by their keys and values, arrays in order."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float, Decimal)):
        return ("n", Decimal(str(value)))
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, dict):
        return ("o", tuple(sorted((k, key_form(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("a", tuple(key_form(v) for v in value))
    return ("z", None)


def logical_id(account_one_id: Any, value: object) -> str:
    """The logical id of version 1 of a rule's transaction: built from the same value as its expected leg's key,
    so a string key value finds its candidates through this indexed column."""
    return f"{account_one_id}:{value}"


# --- TRANSACTION mode -----------------------------------------------------------------------------------


def decide_transactions(batch: Batch, *, new_ids: IdSource = uuid7_texts, now: dt.datetime) -> Plan:
    """Version 1 (EXPECTED) per entry: a POSTED leg on its account and an EXPECTED leg on the rule's account_two,
    or the reason it goes to review."""
    plan = Plan()
    rules = {r.account_one_id: r for r in batch.rules.values()}
    taken = set(batch.taken)
    for entry in batch.entries:
        try:
            created = _version_one(entry, rules.get(entry.account_id), batch, taken, new_ids, now)
        except errors.OutcomeError as exc:
            plan.outcomes.append(review(entry, exc))
            continue
        taken.add(created.transaction["logical_transaction_id"])
        plan.created.append(created)
        plan.outcomes.append(
            Outcome(
                entry,
                StagingStatus.PROCESSED,
                {**client_metadata(entry), "match_type": MATCH_CREATED},
                "new transaction generated",
            )
        )
    return plan


def _version_one(
    entry: StagingEntry, rule: ReconRule | None, batch: Batch, taken: set[str], new_ids: IdSource, now: dt.datetime
) -> Created:
    problem = entry_problem(entry, batch.periods)
    if problem is not None:
        raise problem
    if rule is None:
        raise no_rule(entry, "account_one")
    value = entry.metadata.get(rule.match_key)
    keyed = has_value(value)
    if not keyed:
        value = str(entry.staging_entry_id)
    logical = logical_id(entry.account_id, value)
    if len(logical) > LOGICAL_ID_MAX_LENGTH:
        raise errors.InvalidValueError(
            f"The {rule.match_key} value is too long: a logical transaction id has at most {LOGICAL_ID_MAX_LENGTH}"
            " characters."
        )
    if logical in taken:
        raise errors.DuplicateTransactionError(
            f"A transaction for {rule.match_key}={value} already exists on this account."
        )
    created = _version_one_rows(entry, rule, logical, value, new_ids, now)
    check_balanced((x["entry_type"], x["amount"], x["currency"]) for x in created.legs)
    return Created(created.transaction, created.legs, (rule.account_two_id, rule.match_key, value) if keyed else None)


def _version_one_rows(
    entry: StagingEntry, rule: ReconRule, logical: str, value: object, new_ids: IdSource, now: dt.datetime
) -> Created:
    """The rows of version 1: the transaction, a POSTED leg on the entry's account, an EXPECTED leg on account_two
    carrying the match-key value."""
    txn_id, posted_id, expected_id = new_ids(3)
    meta = leg_metadata(entry)
    txn = {
        "transaction_id": txn_id,
        "logical_transaction_id": logical,
        "version": 1,
        "status": TransactionStatus.EXPECTED,
        "amount": entry.amount,
        "currency": entry.currency,
        "merchant_id": entry.account.merchant_id,
        "rule_id": rule.pk,
        "source_staging_entry_id": entry.pk,
        "metadata": {**client_metadata(entry), rule.match_key: value},
        "created_at": now,
    }
    leg = {
        "transaction_id": txn_id,
        "amount": entry.amount,
        "currency": entry.currency,
        "effective_date": entry.effective_date,
        "created_at": now,
    }
    posted = {
        **leg,
        "entry_id": posted_id,
        "account_id": entry.account_id,
        "entry_type": entry.entry_type,
        "status": EntryStatus.POSTED,
        "metadata": meta,
    }
    expected = {
        **leg,
        "entry_id": expected_id,
        "account_id": rule.account_two_id,
        "entry_type": opposite(entry.entry_type),
        "status": EntryStatus.EXPECTED,
        "metadata": {**meta, rule.match_key: value},
    }
    return Created(txn, [posted, expected], None)


# --- CONFIRMATION mode ----------------------------------------------------------------------------------


def decide_confirmations(batch: Batch, *, new_ids: IdSource = uuid7_texts) -> Plan:
    """Per entry: fulfil the one candidate that agrees, or put a disagreeing one in MISMATCH, or the reason it
    goes to review (no candidate, several)."""
    plan = Plan()
    rules_of: dict[Any, list[ReconRule]] = defaultdict(list)
    for each in sorted(batch.rules.values(), key=lambda r: r.pk):
        rules_of[each.account_two_id].append(each)
    gone: set = set()  # transactions fulfilled or put in MISMATCH by an earlier entry of the batch
    for entry in batch.entries:
        try:
            expected = _the_candidate(entry, rules_of.get(entry.account_id, []), batch, gone)
            old = expected.transaction
            rule = batch.rules.get(old.rule_id)
            reasons = mismatch_reasons(entry, expected, rule)
            if reasons:
                exc = errors.MismatchError("; ".join(reasons))
                gone.add(old.pk)
                plan.mismatched.append((old.pk, f"staging entry {entry.pk}: {exc.message}"))
                plan.outcomes.append(review(entry, exc, mismatch=old.pk))
                continue
            done = plan_fulfilment(
                staging=entry, expected=expected, rule=rule, old_legs=batch.live.get(old.pk, []), new_ids=new_ids
            )
        except errors.OutcomeError as exc:
            plan.outcomes.append(review(entry, exc))
            continue
        gone.add(old.pk)
        plan.fulfilments.append(done)
        plan.outcomes.append(
            Outcome(
                entry,
                StagingStatus.PROCESSED,
                {**client_metadata(entry), "match_type": MATCH_FULFILLED},
                f"fulfilled {old.logical_transaction_id}",
            )
        )
    return plan


def _the_candidate(entry: StagingEntry, rules: list[ReconRule], batch: Batch, gone: set) -> Entry:
    problem = entry_problem(entry, batch.periods)
    if problem is not None:
        raise problem
    if not rules:
        raise no_rule(entry, "account_two")
    keys = [
        (rule.pk, key_form(entry.metadata.get(rule.match_key)))
        for rule in rules
        if has_value(entry.metadata.get(rule.match_key))
    ]
    if not keys:
        raise errors.NoMatchFoundError("The entry has no value for the match key of any rule.")
    found = [c for k in keys for c in batch.candidates.get(k, ()) if c.transaction_id not in gone]
    if not found:
        raise errors.NoMatchFoundError("No expected entry matches this confirmation.")
    if len(found) > 1:
        raise errors.AmbiguousMatchError("More than one expected entry matches this confirmation.")
    return found[0]


def plan_fulfilment(
    *,
    staging: StagingEntry,
    expected: Entry,
    rule: ReconRule | None,
    old_legs: list[Entry],
    new_ids: IdSource = uuid7_texts,
    why: str = "fulfilled",
    difference_account_id: Any = None,
) -> Fulfilment:
    """What fulfilling `expected` (a leg of `expected.transaction`, whose live legs are `old_legs`) with `staging`
    writes; a difference goes to the rule's difference account, else to `difference_account_id`. Raises
    UnbalancedTransactionError when the legs cannot balance."""
    difference = staging.amount - expected.amount
    carried = [e for e in old_legs if e.status == EntryStatus.POSTED]
    new_id, leg_id, *ids = new_ids(len(carried) + 3)  # the last one for a difference leg
    legs = [(e.entry_type, e.amount, e.currency) for e in carried]
    legs.append((staging.entry_type, staging.amount, staging.currency))
    difference_leg = None
    if difference:
        account_id = (rule.difference_account_id if rule else None) or difference_account_id
        if account_id is None:
            raise errors.UnbalancedTransactionError("The amounts differ and the rule has no difference account.")
        side = opposite(staging.entry_type) if difference > 0 else staging.entry_type
        difference_leg = (ids.pop(), account_id, side, abs(difference))
        legs.append((side, abs(difference), staging.currency))
    check_balanced(legs)
    return Fulfilment(
        staging,
        expected.transaction,
        list(old_legs),
        new_id,
        list(zip(carried, ids)),
        leg_id,
        leg_metadata(staging),
        difference,
        difference_leg,
        why,
    )


# --- an operator's forced match -------------------------------------------------------------------------


def decide_forced(batch: Batch, *, new_ids: IdSource = uuid7_texts) -> Plan:
    """An operator's match of an entry in review with the expected leg they chose (`batch.targets`): no date
    window, but the same side, currency and tolerance (with `batch.write_off`, any amount: the whole difference is
    booked). Raises (nothing is written) PeriodClosedConflict, IllegalStateError when the leg is no longer an open
    expectation, UnprocessableError when they disagree."""
    plan = Plan()
    for entry in batch.entries:
        target = batch.targets[entry.pk]
        txn = target.transaction
        if in_closed_period(batch.periods, entry.account.merchant_id, entry.effective_date):
            raise errors.PeriodClosedConflict()
        if target.status != EntryStatus.EXPECTED or txn.status not in (
            TransactionStatus.EXPECTED,
            TransactionStatus.MISMATCH,
        ):
            raise errors.IllegalStateError("The entry is not an open expectation.")
        rule = batch.rules.get(txn.rule_id)
        problems = agreement_problems(
            entry,
            target,
            rule,
            amount_words="amount differs beyond the rule's tolerance",
            check_amount=not batch.write_off,
        )
        if problems:
            raise errors.UnprocessableError("; ".join(problems))
        plan.fulfilments.append(
            plan_fulfilment(
                staging=entry,
                expected=target,
                rule=rule,
                old_legs=batch.live.get(txn.pk, []),
                new_ids=new_ids,
                why="forced match with write-off" if batch.write_off else "forced match",
                difference_account_id=batch.difference_account_id,
            )
        )
        mismatch = batch.transactions.get(entry.mismatch_transaction_id)
        if mismatch is not None and mismatch.pk != txn.pk and mismatch.status == TransactionStatus.MISMATCH:
            plan.reopened.append((mismatch.pk, f"staging entry {entry.pk} matched elsewhere"))
        plan.outcomes.append(
            Outcome(
                entry,
                StagingStatus.PROCESSED,
                {**client_metadata(entry), "match_type": MATCH_FULFILLED, "resolved_by_operator": True},
                batch.reason or f"matched to entry {target.pk} ({txn.logical_transaction_id})",
                from_status=StagingStatus.NEEDS_MANUAL_REVIEW,
            )
        )
    return plan


def decide(batch: Batch, *, now: dt.datetime, new_ids: IdSource = uuid7_texts) -> Plan:
    """The plan of a batch of any mode."""
    if batch.mode == ProcessingMode.TRANSACTION:
        return decide_transactions(batch, new_ids=new_ids, now=now)
    if batch.mode == ProcessingMode.CONFIRMATION:
        return decide_confirmations(batch, new_ids=new_ids)
    return decide_forced(batch, new_ids=new_ids)
