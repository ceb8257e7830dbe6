"""The audit trail: one `Transition` row per state change, in the same database transaction.

FSM transitions are recorded by the `post_transition` receiver (pass `by=` a user or a worker id, and
`reason=`); set-based paths call `record_many` with the rows they changed."""

from collections.abc import Iterable

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.dispatch import receiver
from django.utils import timezone
from django_fsm.signals import post_transition

from tracker.models import Transition


def _actor(by) -> dict:
    if isinstance(by, AbstractBaseUser):
        return {"by_user": by if by.pk else None, "by_worker": ""}
    return {"by_user": None, "by_worker": str(by or "")}


def record_many(model, changes: Iterable[tuple[object, str, str]], *, by=None, reason: str = "") -> int:
    """Bulk-inserts audit rows for (object_id, from_status, to_status) triples. Called inside the
    transaction that made the changes. On PostgreSQL: one INSERT ... SELECT FROM unnest(arrays)."""
    ct = ContentType.objects.get_for_model(model)
    now = timezone.now()
    actor = _actor(by)
    changes = [(str(oid), src, dst) for oid, src, dst in changes]
    if not changes:
        return 0
    if connection.vendor == "postgresql":
        ids, sources, targets = (list(col) for col in zip(*changes))
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {Transition._meta.db_table} (content_type_id, object_id, from_status, to_status, at,"
                " by_user_id, by_worker, reason) SELECT %s, o, f, t, %s, %s, %s, %s"
                " FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(o, f, t)",
                [ct.id, now, actor["by_user"].pk if actor["by_user"] else None, actor["by_worker"], reason[:2000],
                 ids, sources, targets])
        return len(changes)
    Transition.objects.bulk_create([Transition(content_type=ct, object_id=oid, from_status=src, to_status=dst, at=now,
                                               reason=reason[:2000], **actor) for oid, src, dst in changes],
                                   batch_size=500)
    return len(changes)


def history(obj) -> list[Transition]:
    ct = ContentType.objects.get_for_model(type(obj))
    return list(Transition.objects.filter(content_type=ct, object_id=str(obj.pk)).select_related("by_user"))


@receiver(post_transition)
def _record_fsm_transition(sender, instance, name, source, target, **kwargs):
    if source == target:
        return
    method_kwargs = kwargs.get("method_kwargs") or {}
    reason = method_kwargs.get("reason")
    if reason is None:
        reason = name.replace("_", " ")
    record_many(type(instance), [(instance.pk, source, target)], by=method_kwargs.get("by"), reason=str(reason))
