"""Decide: the outcome of every staging entry of a loaded batch, by pure functions.

Nothing here touches the database. The input is a `Batch` (what `recon.matching.load` read and locked), the output
a `Plan` (what `recon.matching.write` writes). Entries are decided in batch order, each seeing the effects of the
ones before it (a transaction fulfilled or put in MISMATCH is no longer a candidate, a logical id created is
taken), so one batch of N decides what N batches of one would."""

import datetime as dt
import json
import re
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from recon import errors
from recon.currencies import minor_units
from recon.models import (
    MONEY_QUANTUM,
    Entry,
    EntryStatus,
    MatchMode,
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
OUTCOME_KEYS = ("match_type", "error", "error_type", "match_group", "group")
MATCH_CREATED = "NewTransactionGenerated"
MATCH_FULFILLED = "Fulfilled"
MATCH_PARTIAL = "PartiallyFulfilled"  # many_to_one: an instalment below the open remainder
SECONDS_PER_DAY = 86400
# `logical_transaction_id` is "{account_one}:{match-key value}" in a column of this many characters.
LOGICAL_ID_MAX_LENGTH: int = Transaction._meta.get_field("logical_transaction_id").max_length or 0
GROUP_VALUE_MAX_LENGTH: int = Transaction._meta.get_field("group_value").max_length or 0

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
    the expected leg the operator chose, `transactions` the locked transactions by id. `groups` maps (rule id,
    group value) to the EXPECTED legs of a one_to_many rule's open group (by id); `group_max` caps a group."""

    mode: str
    entries: list[StagingEntry]
    rules: dict[Any, ReconRule] = field(default_factory=dict)
    periods: list[Period] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    candidates: dict[tuple[Any, KeyForm], list[Entry]] = field(default_factory=dict)
    groups: dict[tuple[Any, str], list[Entry]] = field(default_factory=dict)
    group_max: int = 10_000
    chosen: set | None = None  # an operator's group resolution: the members (transaction ids) to settle
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
    waiting: tuple = ()  # ((account_two, metadata field, value, pattern or None), ...)


@dataclass(frozen=True)
class Fulfilment:
    """Version+1 (`status`: POSTED, or EXPECTED for an instalment that leaves a remainder) of `old`: the old
    version's POSTED legs carried over (`carried`: [(old leg, new id)]), the staging entry's own leg (`leg_id`,
    `leg_metadata`; `amount`, None: the staging entry's) and, when a tolerance applied, a difference leg
    (`difference_leg`: (id, account id, side, amount)) on the rule's difference account; an instalment's
    `remainder_leg` (id, account id, side, amount, metadata) stays EXPECTED. `extra` is added to the version's
    metadata. `old_legs` are the old version's live legs (archived with it), `why` the words of its audit reason."""

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
    amount: Decimal | None = None
    status: str = TransactionStatus.POSTED
    extra: dict = field(default_factory=dict)
    remainder_leg: tuple | None = None


@dataclass
class Plan:
    """Everything a batch writes: staging outcomes, new versions 1, fulfilments, transactions put in MISMATCH and
    transactions reopened (MISMATCH -> EXPECTED), each [(transaction id, reason)]. `deferred` entries are left
    PENDING for another pass after this plan is written (an instalment for an expectation an earlier entry of the
    batch has just paid part of)."""

    outcomes: list[Outcome] = field(default_factory=list)
    created: list[Created] = field(default_factory=list)
    fulfilments: list[Fulfilment] = field(default_factory=list)
    mismatched: list[tuple[Any, str]] = field(default_factory=list)
    reopened: list[tuple[Any, str]] = field(default_factory=list)
    deferred: list[StagingEntry] = field(default_factory=list)

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


def review(
    entry: StagingEntry, exc: errors.OutcomeError, *, mismatch: Any = None, extra: dict | None = None
) -> Outcome:
    return Outcome(
        entry,
        StagingStatus.NEEDS_MANUAL_REVIEW,
        {**client_metadata(entry), **(extra or {}), "error": exc.message, "error_type": exc.error_type},
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
    return agreement_problems(staging, expected, rule) + date_problems(staging, expected, rule)


def date_problems(staging: StagingEntry, expected: Entry, rule: ReconRule | None) -> list[str]:
    """The rule's date window, when the confirmation lies outside it."""
    reasons = []
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


def confirmation_value(rule: ReconRule, entry: StagingEntry) -> object:
    """The confirmation's key under `rule`: its `confirmation_key` field (default: `match_key`), or, with a
    `confirmation_key_pattern`, the pattern's group in the first match in that field (None without a match)."""
    value = entry.metadata.get(rule.confirmation_key or rule.match_key)
    if not rule.confirmation_key_pattern or not has_value(value):
        return value
    found = re.search(rule.confirmation_key_pattern, value if isinstance(value, str) else json.dumps(value))
    return found.group(1) if found else None


def group_text(value: object) -> str:
    """A group_key value as the text both sides are compared by (strings as they are, other JSON as JSON)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


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
    field_name, pattern = rule.confirmation_key or rule.match_key, rule.confirmation_key_pattern or None
    waiting = [(rule.account_two_id, field_name, value, pattern)] if keyed else []
    group = entry.metadata.get(rule.group_key) if rule.match_mode == MatchMode.ONE_TO_MANY else None
    if has_value(group):
        text = group_text(group)
        if len(text) > GROUP_VALUE_MAX_LENGTH:
            raise errors.InvalidValueError(
                f"The {rule.group_key} value is too long: at most {GROUP_VALUE_MAX_LENGTH} characters."
            )
        created.transaction["group_value"] = text
        waiting.append((rule.account_two_id, field_name, text, pattern))
    return Created(created.transaction, created.legs, tuple(waiting))


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
        "group_value": None,
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
    return Created(txn, [posted, expected])


# --- CONFIRMATION mode ----------------------------------------------------------------------------------


def decide_confirmations(batch: Batch, *, new_ids: IdSource = uuid7_texts) -> Plan:
    """Per entry, by the mode of the rule whose key yields its candidates: fulfil the one candidate that agrees or
    put a disagreeing one in MISMATCH (one_to_one); settle a whole group (one_to_many); pay an instalment
    (many_to_one); or the reason it goes to review (no candidate, several, candidates of two rules)."""
    plan = Plan()
    rules_of: dict[Any, list[ReconRule]] = defaultdict(list)
    for each in sorted(batch.rules.values(), key=lambda r: r.pk):
        rules_of[each.account_two_id].append(each)
    gone: set = set()  # transactions fulfilled or put in MISMATCH by an earlier entry of the batch
    partial: set = set()  # paid in part by an earlier instalment of the batch (the new version is not written yet)
    for entry in batch.entries:
        try:
            rule, found, grouped = _candidates(entry, rules_of.get(entry.account_id, []), batch, gone, partial)
            if rule is None:
                plan.deferred.append(entry)
                continue
            if grouped:
                _decide_group(entry, rule, found, batch, plan, gone, new_ids)
                continue
            if len(found) > 1:
                raise errors.AmbiguousMatchError("More than one expected entry matches this confirmation.")
            if rule.match_mode == MatchMode.MANY_TO_ONE:
                _decide_instalment(entry, rule, found[0], batch, plan, gone, partial, new_ids)
                continue
            expected = found[0]
            old = expected.transaction
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


def _candidates(
    entry: StagingEntry, rules: list[ReconRule], batch: Batch, gone: set, partial: set
) -> tuple[ReconRule | None, list[Entry], bool]:
    """(the deciding rule, its candidate legs, whether they are a one_to_many group); (None, [], False) when the
    entry must wait for another pass (its expectation was partly paid earlier in the batch)."""
    problem = entry_problem(entry, batch.periods)
    if problem is not None:
        raise problem
    if not rules:
        raise no_rule(entry, "account_two")
    hits: list[tuple[ReconRule, list[Entry], bool]] = []
    keyed = False
    for rule in rules:
        value = confirmation_value(rule, entry)
        if not has_value(value):
            continue
        keyed = True
        if rule.match_mode == MatchMode.ONE_TO_MANY:
            members = [c for c in batch.groups.get((rule.pk, group_text(value)), ()) if c.transaction_id not in gone]
            if members:
                hits.append((rule, members, True))
                continue
        legs = batch.candidates.get((rule.pk, key_form(value)), ())
        if any(c.transaction_id in partial for c in legs):
            return None, [], False
        legs = [c for c in legs if c.transaction_id not in gone]
        if legs:
            hits.append((rule, legs, False))
    if not keyed:
        raise errors.NoMatchFoundError("The entry has no value for the confirmation key of any rule.")
    if not hits:
        raise errors.NoMatchFoundError("No expected entry matches this confirmation.")
    if len(hits) > 1:
        raise errors.AmbiguousMatchError("Expected entries of more than one rule match this confirmation.")
    return hits[0]


def group_shares(difference: Decimal, amounts: list[Decimal], currency: str) -> list[Decimal]:
    """`difference` split over `amounts` pro rata, each share rounded to the currency's minor unit, the remainder
    on the largest amount (the first of equals): the shares add up to `difference` exactly."""
    total = sum(amounts, Decimal(0))
    if not difference or not total:
        return [Decimal(0)] * len(amounts)
    unit = Decimal(1).scaleb(-minor_units(currency))
    shares = [(difference * a / total).quantize(unit, rounding=ROUND_HALF_EVEN) for a in amounts]
    largest = max(range(len(amounts)), key=lambda i: (amounts[i], -i))
    shares[largest] += difference - sum(shares, Decimal(0))
    return shares


def _decide_group(
    entry: StagingEntry, rule: ReconRule, members: list[Entry], batch: Batch, plan: Plan, gone: set, new_ids: IdSource
) -> None:
    """A payout (one_to_many): every member fulfilled when the sums agree within the rule's tolerance (of the
    sum), the difference booked pro rata in the members' new versions; otherwise MismatchError and nothing."""
    key = group_text(confirmation_value(rule, entry))
    if len(members) > batch.group_max:
        raise errors.AmbiguousMatchError(
            f"The group {rule.group_key}={key} has {len(members)} open expectations; a group holds at most "
            f"{batch.group_max} (RECON_GROUP_MAX)."
        )
    if batch.chosen is not None:
        members = [m for m in members if m.transaction_id in batch.chosen]
        if len(members) != len(batch.chosen):
            raise errors.UnprocessableError("A chosen member is not an open expectation of this group.")
    total = sum((m.amount for m in members), Decimal(0))
    difference = entry.amount - total
    allowed = allowed_difference(rule, total)
    info = {
        "rule_id": str(rule.pk),
        "key": key,
        "members": len(members),
        "member_transaction_ids": [str(m.transaction_id) for m in members],
        "sum": str(total),
        "confirmation_amount": str(entry.amount),
        "difference": str(difference),
    }
    problems = sorted({p for m in members for p in agreement_problems(entry, m, rule, check_amount=False)})
    if not problems and abs(difference) > allowed and not batch.write_off:
        problems = [
            f"the group's {len(members)} expectations sum to {total}, the confirmation is {entry.amount} "
            f"(difference {difference}, tolerance {allowed})"
        ]
    if problems:
        plan.outcomes.append(review(entry, errors.MismatchError("; ".join(problems)), extra={"group": info}))
        return
    group_id = str(entry.pk)
    done = _group_fulfilments(entry, rule, members, batch, difference, group_id, new_ids)
    gone.update(m.transaction_id for m in members)
    plan.fulfilments.extend(done)
    plan.outcomes.append(
        Outcome(
            entry,
            StagingStatus.PROCESSED,
            {
                **client_metadata(entry),
                "match_type": MATCH_FULFILLED,
                "match_group": group_id,
                "group": {k: v for k, v in info.items() if k != "member_transaction_ids"},  # ?match_group= lists them
            },
            f"fulfilled the group {rule.group_key}={key} ({len(members)} expectations)",
        )
    )


def _group_fulfilments(
    entry: StagingEntry,
    rule: ReconRule,
    members: list[Entry],
    batch: Batch,
    difference: Decimal,
    group_id: str,
    new_ids: IdSource,
) -> list[Fulfilment]:
    """Each member's version + 1, its own leg its amount plus its pro-rata share of `difference`."""
    shares = group_shares(difference, [m.amount for m in members], entry.currency)
    return [
        plan_fulfilment(
            staging=entry,
            expected=member,
            rule=rule,
            old_legs=batch.live.get(member.transaction_id, []),
            new_ids=new_ids,
            why=f"fulfilled by payout {group_id}",
            amount=member.amount + share,
            extra={"match_group": group_id},
        )
        for member, share in zip(members, shares)
    ]


def _decide_instalment(
    entry: StagingEntry,
    rule: ReconRule,
    expected: Entry,
    batch: Batch,
    plan: Plan,
    gone: set,
    partial: set,
    new_ids: IdSource,
) -> None:
    """An instalment (many_to_one) on the expected leg `expected` (the open remainder): below it, a version that
    stays EXPECTED with the rest as its EXPECTED leg; within tolerance of it, POSTED; beyond, MismatchError and
    the expectation stays EXPECTED."""
    old = expected.transaction
    remaining = expected.amount
    allowed = allowed_difference(rule, old.amount)
    reasons = agreement_problems(entry, expected, rule, check_amount=False) + date_problems(entry, expected, rule)
    if not reasons and entry.amount > remaining + allowed:
        reasons = [f"overpays: {remaining} remains of {old.amount}, got {entry.amount} (tolerance {allowed})"]
    if reasons:
        plan.outcomes.append(review(entry, errors.MismatchError("; ".join(reasons))))
        return
    group_id = str(old.metadata.get("match_group") or old.pk)
    paid = old.amount - remaining + entry.amount
    final = entry.amount >= remaining - allowed
    left = MONEY_QUANTUM * 0 if final else remaining - entry.amount
    extra = {"match_group": group_id, "paid": str(paid), "remaining": str(left)}
    live = batch.live.get(old.pk, [])
    if final:
        done = plan_fulfilment(staging=entry, expected=expected, rule=rule, old_legs=live, new_ids=new_ids, extra=extra)
    else:
        done = plan_fulfilment(
            staging=entry,
            expected=expected,
            rule=rule,
            old_legs=live,
            new_ids=new_ids,
            why="instalment",
            amount=entry.amount,
            extra=extra,
            remainder=remaining - entry.amount,
        )
        partial.add(old.pk)
    gone.add(old.pk)
    plan.fulfilments.append(done)
    plan.outcomes.append(
        Outcome(
            entry,
            StagingStatus.PROCESSED,
            {
                **client_metadata(entry),
                "match_type": MATCH_FULFILLED if final else MATCH_PARTIAL,
                "match_group": group_id,
            },
            f"{'fulfilled' if final else 'paid part of'} {old.logical_transaction_id}",
        )
    )


def plan_fulfilment(
    *,
    staging: StagingEntry,
    expected: Entry,
    rule: ReconRule | None,
    old_legs: list[Entry],
    new_ids: IdSource = uuid7_texts,
    why: str = "fulfilled",
    difference_account_id: Any = None,
    amount: Decimal | None = None,
    extra: dict | None = None,
    remainder: Decimal | None = None,
) -> Fulfilment:
    """What fulfilling `expected` (a leg of `expected.transaction`, whose live legs are `old_legs`) with `staging`
    writes; a difference goes to the rule's difference account, else to `difference_account_id`. `amount` is the
    own leg's amount (a payout member's share of it; default the staging entry's); with `remainder` (an
    instalment) that much stays EXPECTED and the version too. Raises UnbalancedTransactionError when the legs
    cannot balance."""
    paid = staging.amount if amount is None else amount
    difference = Decimal(0) if remainder else paid - expected.amount
    carried = [e for e in old_legs if e.status == EntryStatus.POSTED]
    new_id, leg_id, *ids = new_ids(len(carried) + 4)  # the last two for a difference or a remainder leg
    legs = [(e.entry_type, e.amount, e.currency) for e in carried]
    legs.append((staging.entry_type, paid, staging.currency))
    difference_leg = remainder_leg = None
    if remainder:
        remainder_leg = (ids.pop(), expected.account_id, expected.entry_type, remainder, dict(expected.metadata))
        legs.append((expected.entry_type, remainder, staging.currency))
    if difference:
        account_id = (rule.difference_account_id if rule else None) or difference_account_id
        if account_id is None:
            raise errors.UnbalancedTransactionError("The amounts differ and the rule has no difference account.")
        side = opposite(staging.entry_type) if difference > 0 else staging.entry_type
        difference_leg = (ids.pop(), account_id, side, abs(difference))
        legs.append((side, abs(difference), staging.currency))
    check_balanced(legs)
    extra = dict(extra or {})
    if difference:
        extra["amount_difference"] = str(difference)
    return Fulfilment(
        staging,
        expected.transaction,
        list(old_legs),
        new_id,
        list(zip(carried, ids)),
        leg_id,
        {**leg_metadata(staging), **({"match_group": extra["match_group"]} if "match_group" in extra else {})},
        difference,
        difference_leg,
        why,
        amount=amount,
        status=TransactionStatus.EXPECTED if remainder else TransactionStatus.POSTED,
        extra=extra,
        remainder_leg=remainder_leg,
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
