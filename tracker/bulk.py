"""Bulk inserts for the set-based paths. On PostgreSQL they COPY (psycopg 3 formats COPY rows in C, where
`bulk_create` binds each value of each row in Python); elsewhere they use `bulk_create`."""

import time
from collections.abc import Iterable, Sequence
from operator import attrgetter

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import JSONField
from django.utils import timezone

# JSON text as Django's JSONField writes it, with one encoder for every bulk row (json.dumps(cls=...) would
# build a new encoder per value).
to_json = DjangoJSONEncoder().encode


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[tuple]) -> None:
    """COPY `rows` (tuples in `columns` order; dicts for JSON columns as JSON text) into `table`, in the
    caller's transaction. PostgreSQL only. Omitted columns get their database defaults (e.g. a bigserial);
    constraints and triggers apply as for INSERT."""
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    start = time.monotonic()
    with connection.cursor() as cursor:
        with cursor.cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    if connection.queries_logged:  # as Django's debug cursor logs every other statement
        connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - start:.3f}"})


def insert_models(objs: Sequence) -> None:
    """Inserts new instances of one model, every concrete column as the instance holds it (defaults were
    applied when the instances were built; primary keys are set client-side, e.g. UUIDs). Like
    `bulk_create` without RETURNING: no signals, nothing read back. Assumes psycopg adapts each attribute
    as Django would (true for str, int, Decimal, UUID, datetime); JSON fields are encoded with their encoder
    and `auto_now`/`auto_now_add` fields get the current time."""
    if not objs:
        return
    model = type(objs[0])
    if connection.vendor != "postgresql":
        model.objects.bulk_create(objs)
        return
    fields = model._meta.concrete_fields
    now = timezone.now()
    json_fields = [(i, f.encoder().encode if f.encoder else to_json) for i, f in enumerate(fields)
                   if isinstance(f, JSONField)]
    stamped = [i for i, f in enumerate(fields) if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
    values = attrgetter(*[f.attname for f in fields])

    def row(obj) -> list:
        out = list(values(obj))
        for i, encode in json_fields:
            out[i] = encode(out[i])
        for i in stamped:
            out[i] = now
        return out

    copy_rows(model._meta.db_table, [f.column for f in fields], map(row, objs))
