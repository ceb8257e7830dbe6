"""The audit trail: one `Transition` row per state change, in the same database transaction.

FSM transitions are recorded by the `post_transition` receiver (pass `by=` a user or a worker id, and
`reason=`); set-based paths call `record_many` with the rows they changed."""

import threading
from collections.abc import Iterable
from contextlib import contextmanager

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone
from django_fsm.signals import post_transition

from tracker.bulk import array_columns, execute
from tracker.models import Transition

# A user's name as the audit keeps it (the column's length, Django's username length).
ACTOR_NAME_CHARS = Transition._meta.get_field("by_name").max_length


def _actor(by) -> dict:
    """A user (its id and, kept for good, its name) or a worker id / system name."""
    if isinstance(by, AbstractBaseUser):
        return {"by_user": by if by.pk else None, "by_worker": "", "by_name": by.get_username()[:ACTOR_NAME_CHARS]}
    return {"by_user": None, "by_worker": str(by or ""), "by_name": ""}


def record_many(model, changes: Iterable[tuple[object, str, str]], *, by=None, reason: str = "") -> int:
    """Audit rows for (object_id, from_status, to_status) triples of one model, all with the same reason.
    Called inside the transaction that made the changes."""
    ct_id = ContentType.objects.get_for_model(model).id
    return record_rows([(ct_id, oid, src, dst, reason) for oid, src, dst in changes], by=by)


_local = threading.local()


@contextmanager
def batch():
    """Inside the block, audit rows are collected and written with one INSERT per actor at its end (still inside
    the caller's transaction; each actor's rows carry the time of its first): for code that makes several
    transitions in one transaction (workflow steps)."""
    outer = getattr(_local, "rows", None) is None
    if outer:
        _local.rows = []
    try:
        yield
        if outer:
            rows, _local.rows = _local.rows, None
            groups: dict = {}
            for by, at, row in rows:
                actor = _actor(by)
                key = (actor["by_user"].pk if actor["by_user"] else None, actor["by_worker"])
                groups.setdefault(key, (by, at, []))[2].append(row)
            for by, at, group in groups.values():
                _write(group, by=by, at=at)
    finally:
        if outer:
            _local.rows = None


def record_rows(rows: Iterable[tuple[int, object, str, str, str]], *, by=None, at=None) -> int:
    """Audit rows (content type id, object id, from_status, to_status, reason), each with its own model and
    reason, in one INSERT. Called inside the transaction that made the changes (inside `batch()`,
    written at the block's end)."""
    rows = list(rows)
    buffer = getattr(_local, "rows", None)
    if buffer is not None:
        at = at or timezone.now()
        buffer.extend((by, at, row) for row in rows)
        return len(rows)
    return _write(rows, by=by, at=at)


def _write(rows: list, *, by=None, at=None) -> int:
    """One INSERT of the rows from arrays (AUDIT_INSERT): one round trip, where a COPY needs two."""
    rows = list(rows)
    if not rows:
        return 0
    actor = _actor(by)
    execute(
        AUDIT_INSERT,
        [
            at or timezone.now(),
            actor["by_user"].pk if actor["by_user"] else None,
            actor["by_worker"],
            actor["by_name"],
            *array_columns([(ct, str(oid), src, dst, reason[:REASON_CHARS]) for ct, oid, src, dst, reason in rows], 5),
        ],
        rows=False,
    )
    return len(rows)


REASON_CHARS = 2000

# -- audit_insert -- audit rows with one time and actor (at, by_user_id, by_worker, by_name) and, as arrays (one
# element per row), their content type ids, object ids, from and to statuses and reasons.
AUDIT_INSERT = f"""
INSERT INTO {Transition._meta.db_table} (content_type_id, object_id, from_status, to_status, at, by_user_id, by_worker,
    by_name, reason)
SELECT r.ct, r.oid, r.src, r.dst, %s::timestamptz, %s::integer, %s::text, %s::text, r.why
FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[], %s::text[]) AS r(ct, oid, src, dst, why)
"""


def history(obj) -> list[Transition]:
    ct = ContentType.objects.get_for_model(type(obj))
    return list(Transition.objects.filter(content_type=ct, object_id=str(obj.pk)).select_related("by_user"))


def connect() -> None:
    """Records every FSM transition (from TrackerConfig.ready)."""
    post_transition.connect(_record_fsm_transition, dispatch_uid="tracker-audit")


def _record_fsm_transition(sender, instance, name, source, target, **kwargs):
    if source == target:
        return
    method_kwargs = kwargs.get("method_kwargs") or {}
    reason = method_kwargs.get("reason")
    if reason is None:
        reason = name.replace("_", " ")
    record_many(type(instance), [(instance.pk, source, target)], by=method_kwargs.get("by"), reason=str(reason))
