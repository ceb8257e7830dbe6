"""Write: the one writer of the engine's outcomes (versions, legs, staging outcomes, audit rows, reprocessing).

Called inside `transaction.atomic()` with the rows of the plan locked by `recon.matching.load`. Order: the
transactions' state changes (one open version per logical transaction), new versions, staging outcomes, the audit
rows in one COPY, the entries to reprocess, then the legs last (version 1's legs, then the archived and new legs of
the fulfilled versions in one statement): they update the accounts' running balances (`recon_account_balance`),
whose rows stay locked until commit, so another consumer on the same accounts waits only for the tail of this
batch."""

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.utils import timezone

from recon import queries
from recon.matching.decide import Fulfilment, Outcome, Plan, client_metadata, key_form
from recon.models import Entry, EntryStatus, ProcessingMode, StagingEntry, StagingStatus, Transaction, TransactionStatus
from tracker import audit
from tracker.bulk import array_columns, array_literal, insert_rows, json_text
from tracker.services import TaskSpec, task_create_many

TASK_TYPE = "PROCESS_STAGING_ENTRY"
AuditRow = tuple[type, Any, str, str, str]  # (model, object id, from status, to status, reason)


def declared_moves(model: Any) -> set[tuple[str, str]]:
    """The (source, target) pairs of the model's FSM transitions on `status` (django-fsm-2): the one definition of
    the state machine, which every set-based move of the writer must follow."""
    field = model._meta.get_field("status")
    return {(t.source, t.target) for t in field.get_all_transitions(model)}


class IllegalMoveError(Exception):
    """The writer was asked for a state change its model's FSM does not declare (a bug in decide)."""


def check_moves(model: Any, moves: Iterable[tuple[str, str]]) -> None:
    allowed = _DECLARED.get(model)
    if allowed is None:
        allowed = _DECLARED[model] = declared_moves(model)
    bad = set(moves) - allowed
    if bad:
        raise IllegalMoveError(f"{model.__name__}: {sorted(bad)} not declared by its state machine")


_DECLARED: dict[type, set[tuple[str, str]]] = {}


class StaleBatchError(Exception):
    """A row the batch had locked was not in the state it was decided from (a bug: the batch is rolled back and
    its tasks retried)."""


# --- audit rows, one builder per kind of change ----------------------------------------------------------


def audit_outcome(outcome: Outcome) -> AuditRow:
    return (StagingEntry, outcome.entry.pk, outcome.from_status, outcome.to_status, outcome.reason)


def audit_superseded(f: Fulfilment) -> list[AuditRow]:
    """The old version and its live legs, archived by the fulfilment."""
    version = f.old.version + 1
    rows: list[AuditRow] = [
        (Transaction, f.old.pk, f.old.status, TransactionStatus.ARCHIVED, f"superseded by version {version} ({f.why})")
    ]
    rows += [
        (Entry, leg.pk, leg.status, EntryStatus.ARCHIVED, f"superseded by version {version}") for leg in f.old_legs
    ]
    return rows


def audit_mismatch(transaction_id: Any, reason: str) -> AuditRow:
    return (Transaction, transaction_id, TransactionStatus.EXPECTED, TransactionStatus.MISMATCH, reason)


def audit_reopened(transaction_id: Any, reason: str) -> AuditRow:
    return (Transaction, transaction_id, TransactionStatus.MISMATCH, TransactionStatus.EXPECTED, reason)


def audit_reprocessed(staging_entry_id: Any, from_status: str, reason: str) -> AuditRow:
    return (StagingEntry, staging_entry_id, from_status, StagingStatus.PENDING, reason)


def audit_write(rows: Iterable[AuditRow], *, by, at: dt.datetime) -> None:
    """The audit rows of every change, each with its own model and reason, in one COPY."""
    types: dict[type, int] = {}
    out = []
    for model, oid, src, dst, reason in rows:
        if model not in types:
            types[model] = ContentType.objects.get_for_model(model).pk
        out.append((types[model], oid, src, dst, reason))
    audit.record_rows(out, by=by, at=at)


# --- the writer --------------------------------------------------------------------------------------------


def plan_write(plan: Plan, *, by, now: dt.datetime) -> None:
    """Writes everything `plan` decided, in the order the module docstring gives; every state change is first
    checked against the models' FSM declarations (`check_moves`)."""
    check_moves(StagingEntry, {(o.from_status, o.to_status) for o in plan.outcomes})
    check_moves(Entry, {(leg.status, EntryStatus.ARCHIVED) for f in plan.fulfilments for leg in f.old_legs})
    _transactions_move(plan)
    insert_rows(Transaction, [c.transaction for c in plan.created])
    _versions_insert(plan.fulfilments, now)
    _staging_outcomes_write(plan.outcomes, now)
    rows = [row for f in plan.fulfilments for row in audit_superseded(f)]
    rows += [audit_mismatch(pk, reason) for pk, reason in plan.mismatched]
    rows += [audit_reopened(pk, reason) for pk, reason in plan.reopened]
    rows += [audit_outcome(o) for o in plan.outcomes]
    audit_write(rows, by=by, at=now)
    waiting = [w for c in plan.created for w in c.waiting]
    if waiting:
        _waiting_reprocess(waiting, by=by)
    insert_rows(Entry, [leg for c in plan.created for leg in c.legs])
    _legs_write(plan.fulfilments, now)


def _execute(sql: str, params: dict) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _transactions_move(plan: Plan) -> None:
    moves = [(f.old.pk, f.old.status, TransactionStatus.ARCHIVED) for f in plan.fulfilments]
    moves += [(pk, TransactionStatus.EXPECTED, TransactionStatus.MISMATCH) for pk, _ in plan.mismatched]
    moves += [(pk, TransactionStatus.MISMATCH, TransactionStatus.EXPECTED) for pk, _ in plan.reopened]
    if not moves:
        return
    check_moves(Transaction, {(src, dst) for _, src, dst in moves})
    ids, from_status, to_status = array_columns(moves, 3)
    if _execute(queries.TRANSACTIONS_MOVE, {"ids": ids, "from_status": from_status, "to_status": to_status}) != len(
        moves
    ):
        raise StaleBatchError("a transaction of the batch changed under its lock")


def _versions_insert(fulfilments: Sequence[Fulfilment], now: dt.datetime) -> None:
    """The new versions (their old versions archived first, as one version per logical transaction may be open)."""
    if not fulfilments:
        return
    ids, old, staging, statuses, extra = array_columns(
        [(f.new_id, f.old.pk, f.staging.pk, f.status, json_text(f.extra)) for f in fulfilments], 5
    )
    _execute(
        queries.VERSIONS_INSERT,
        {"now": now, "ids": ids, "old": old, "staging": staging, "statuses": statuses, "extra": extra},
    )


def _legs_write(fulfilments: Sequence[Fulfilment], now: dt.datetime) -> None:
    """The old versions' live legs archived and the new versions' legs inserted, in one statement (after
    `_versions_insert`)."""
    if not fulfilments:
        return
    archived = [leg.pk for f in fulfilments for leg in f.old_legs]
    carried = [(new_id, f.new_id, leg.pk) for f in fulfilments for leg, new_id in f.carried]
    # (id, transaction, staging entry, account, side, amount, metadata, status); None: the staging entry's
    own: list[tuple] = []
    for f in fulfilments:
        own.append((f.leg_id, f.new_id, f.staging.pk, None, None, f.amount, json_text(f.leg_metadata), None))
        if f.remainder_leg:
            leg_id, account_id, side, amount, metadata = f.remainder_leg
            own.append(
                (leg_id, f.new_id, f.staging.pk, account_id, side, amount, json_text(metadata), EntryStatus.EXPECTED)
            )
        if f.difference_leg:
            leg_id, account_id, side, amount = f.difference_leg
            metadata = json_text({**f.leg_metadata, "difference": True})
            own.append((leg_id, f.new_id, f.staging.pk, account_id, side, amount, metadata, None))
    c_ids, c_txns, c_old = array_columns(carried, 3)
    o_ids, o_txns, o_staging, o_accounts, o_sides, o_amounts, o_metadata, o_statuses = array_columns(own, 8)
    with connection.cursor() as cursor:
        cursor.execute(
            queries.LEGS_WRITE,
            {
                "archived_status": EntryStatus.ARCHIVED,
                "archived": array_literal(archived),
                "status": EntryStatus.POSTED,
                "now": now,
                "carried_ids": c_ids,
                "carried_txns": c_txns,
                "carried_old": c_old,
                "own_ids": o_ids,
                "own_txns": o_txns,
                "own_staging": o_staging,
                "own_accounts": o_accounts,
                "own_sides": o_sides,
                "own_amounts": o_amounts,
                "own_metadata": o_metadata,
                "own_statuses": o_statuses,
            },
        )
        counts = cursor.fetchone()
    if counts != (len(archived), len(carried) + len(own)):
        raise StaleBatchError(f"legs archived/inserted {counts}, expected {len(archived)}/{len(carried) + len(own)}")


def _staging_outcomes_write(outcomes: Sequence[Outcome], now: dt.datetime) -> None:
    """The staging entries' outcomes, each only from the state it was decided from; the instances are updated
    too (the caller may return them)."""
    if not outcomes:
        return
    rows = []
    for o in outcomes:
        e = o.entry
        e.__dict__["status"] = o.to_status  # a protected FSM field: its descriptor refuses assignment
        e.metadata, e.mismatch_transaction_id = o.metadata, o.mismatch_transaction_id
        e.discarded_at = now if o.to_status == StagingStatus.PROCESSED else None
        e.updated_at = now
        rows.append(
            (e.pk, o.from_status, o.to_status, json_text(o.metadata), e.discarded_at, e.mismatch_transaction_id)
        )
    ids, from_status, to_status, metadata, discarded_at, mismatch = array_columns(rows, 6)
    if _execute(
        queries.STAGING_OUTCOMES_UPDATE,
        {
            "now": now,
            "ids": ids,
            "from_status": from_status,
            "to_status": to_status,
            "metadata": metadata,
            "discarded_at": discarded_at,
            "mismatch": mismatch,
        },
    ) != len(outcomes):
        raise StaleBatchError("a staging entry of the batch changed under its lock")


# --- reprocessing ------------------------------------------------------------------------------------------


def task_spec(entry: StagingEntry, merchant_id: str) -> TaskSpec:
    """The PROCESS_STAGING_ENTRY task of an entry."""
    return TaskSpec(TASK_TYPE, {"staging_entry_id": str(entry.pk), "mode": entry.processing_mode}, merchant_id)


def _waiting_reprocess(waiting: list[tuple], *, by) -> int:
    """Expectations for (account, confirmation key, value, pattern) appeared: the confirmations in review with
    NoMatchFoundError for one of them go back to PENDING with a new task, each audited with the value it waited
    for."""
    accounts, keys, values, patterns = array_columns([(a, k, json_text(v), p) for a, k, v, p in waiting], 4)
    with connection.cursor() as cursor:
        cursor.execute(
            queries.WAITING_CONFIRMATIONS_LOCK,
            {
                "accounts": array_literal(sorted({a for a, *_ in waiting})),
                "status": StagingStatus.NEEDS_MANUAL_REVIEW,
                "mode": ProcessingMode.CONFIRMATION,
                "error_type": "NoMatchFoundError",
                "w_accounts": accounts,
                "w_keys": keys,
                "w_values": values,
                "w_patterns": patterns,
            },
        )
        found = cursor.fetchall()
    if not found:
        return 0
    by_value = {(str(a), k, key_form(v)): (k, v) for a, k, v, _ in waiting}
    reasons = {}
    for staging_id, account_id, metadata in found:
        metadata = metadata if isinstance(metadata, dict) else {}
        key, value = next(
            (
                (k, v)
                for (a, k, form), (_, v) in by_value.items()
                if a == str(account_id) and k in metadata and key_form(metadata[k]) == form
            ),
            ("", ""),
        )
        reasons[staging_id] = f"expectation appeared for {key}={value}"
    return staging_entries_reprocess(reasons=reasons, by=by)


def staging_entries_reprocess(*, reasons: dict, by, from_status: str = StagingStatus.NEEDS_MANUAL_REVIEW) -> int:
    """Moves the staging entries `reasons` names (id -> audit reason; locked by the caller, in `from_status`) to
    PENDING with a fresh task each, clearing their previous outcome. Set-based; called inside
    `transaction.atomic()`. Both the system's reprocess (an awaited expectation appeared) and an operator's come
    here."""
    check_moves(StagingEntry, {(from_status, StagingStatus.PENDING)})
    rows = list(
        StagingEntry.objects.filter(pk__in=list(reasons), status=from_status).select_related("account").order_by("pk")
    )
    if not rows:
        return 0
    tasks = task_create_many([task_spec(r, r.account.merchant_id) for r in rows])
    for row, task in zip(rows, tasks):
        row.task_id = task.task_id
        row.metadata = client_metadata(row)
    StagingEntry.objects.bulk_update(rows, ["task_id", "metadata"])
    StagingEntry.objects.filter(pk__in=[r.pk for r in rows], status=from_status).update(
        status=StagingStatus.PENDING, updated_at=timezone.now()
    )
    audit_write([audit_reprocessed(r.pk, from_status, reasons[r.pk]) for r in rows], by=by, at=timezone.now())
    return len(rows)
