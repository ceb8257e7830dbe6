"""Bulk reads and writes for the set-based paths: inserts by COPY, array literals for id lists, model instances
loaded without `Model.__init__`, and prepared statements for the hot paths (`execute`)."""

import time
from collections.abc import Iterable, Sequence
from operator import itemgetter
from uuid import UUID

import psycopg
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.db.models import JSONField
from django.db.models.base import ModelState
from django.utils import timezone

# JSON text as Django's JSONField writes it, with one encoder for every bulk row (json.dumps(cls=...) would
# build a new encoder per value).
json_text = DjangoJSONEncoder().encode


def json_text_of(field):
    """How `field` (a JSONField) writes a value as JSON text: its own encoder's, else `json_text`."""
    return field.encoder().encode if field.encoder else json_text


def execute(sql: str, params, *, rows: bool = True) -> list[tuple]:
    """Runs a statement of a hot path (a workflow step's statements, completing held tasks, audit rows) in the
    current transaction, for statements whose plan does not depend on their values (key lookups):
    server-side bound and prepared on its connection (psycopg `prepare=True`: parsed once per connection, which
    Django's client-side cursors never do), unless TRACKER["PREPARED_STATEMENTS"] is off (a transaction pooler
    without prepared statements, PgBouncer before 1.21). Errors come out as Django's, and the statement is logged
    where Django's debug cursor would log it. Returns the statement's rows (none when not `rows`)."""
    if not settings.TRACKER.get("PREPARED_STATEMENTS", True):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if rows else []
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    start = time.monotonic()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        found = cursor.fetchall() if rows else []
    if connection.queries_logged:
        connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - start:.3f}"})
    return found


def _element(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, UUID):
        return format(value.int, "032x")  # PostgreSQL reads 32 hex digits as a uuid
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def array_literal(values: Iterable) -> str:
    """The PostgreSQL array literal of `values` (`{"a","b",NULL}`), to pass as ONE text parameter cast to an
    array type (`%s::uuid[]`): psycopg adapts a list element by element in Python (about 5 µs a UUID here),
    this is about 0.5 µs. Elements are UUIDs, or anything whose str() the array type reads (text, int,
    Decimal); None is NULL."""
    return "{" + ",".join(map(_element, values)) + "}"


def array_columns(rows: Sequence[tuple], width: int) -> list[str]:
    """The columns of `rows` (tuples of `width` values) as array literals, for `unnest(%s::uuid[], ...)`."""
    return [array_literal(column) for column in zip(*rows)] if rows else ["{}"] * width


def load_models(queryset) -> list:
    """The rows of `queryset` as instances of its model, built without `Model.__init__` (no init signals or
    field descriptors, a third of the cost of Django's loading) for the batch paths' reads. Every concrete
    field is loaded; the queryset's filters, ordering and `select_for_update` apply; `select_related` and
    deferred fields do not."""
    names = [f.attname for f in queryset.model._meta.concrete_fields]
    return _instances(queryset.model, names, queryset.values_list(*names), queryset.db)


def models_from_rows(model, rows: Iterable[Sequence]) -> list:
    """Instances of `model` (built as by `load_models`) from raw cursor rows that start with every concrete
    column in field order (`RETURNING {select_columns(model)}`); Django's field converters are applied (JSON
    text decoded). Columns after those are ignored."""
    fields = model._meta.concrete_fields
    converters = [(i, funcs) for i, f in enumerate(fields) if (funcs := f.get_db_converters(connection))]

    def convert(row: Sequence) -> list:
        values = list(row[: len(fields)])
        for i, funcs in converters:
            for func in funcs:
                values[i] = func(values[i], None, connection)
        return values

    return _instances(model, [f.attname for f in fields], map(convert, rows), connection.alias)


def select_columns(model, alias: str) -> str:
    """`alias.col, ...` for every concrete column of `model` in field order (for `models_from_rows`)."""
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)


def _instances(model, names: list[str], rows: Iterable[Sequence], db: str) -> list:
    new = model.__new__
    objs = []
    for values in rows:
        obj = new(model)
        obj.__dict__.update(zip(names, values))
        obj._state = state = ModelState()
        state.adding, state.db = False, db
        objs.append(obj)
    return objs


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[tuple] | str) -> None:
    """COPY `rows` into `table`, in the caller's transaction: tuples in `columns` order (dicts for JSON
    columns as JSON text), or the COPY text itself (lines of tab-separated values escaped with `copy_text`,
    `\\N` for NULL; about half the cost of psycopg's row formatting for short rows). PostgreSQL only. Omitted
    columns get their database defaults (e.g. a bigserial); constraints and triggers apply as for INSERT."""
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    start = time.monotonic()
    with connection.cursor() as cursor:
        with cursor.cursor.copy(sql) as copy:
            if isinstance(rows, str):
                copy.write(rows)
            else:
                for row in rows:
                    copy.write_row(row)
    if connection.queries_logged:  # as Django's debug cursor logs every other statement
        connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - start:.3f}"})


def copy_text(value: str) -> str:
    """`value` escaped for a field of COPY's text format."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def insert_rows(model, rows: Sequence[dict]) -> None:
    """Inserts new rows of one model, each a dict with a value for every concrete field (by attname; primary
    keys set client-side, e.g. UUIDs), without building model instances: one COPY (psycopg adapts str, int,
    Decimal, UUID, datetime as Django would; JSON fields are encoded with their encoder, `auto_now`/`auto_now_add`
    fields get the current time). Like `bulk_create` without RETURNING: no signals, nothing read back."""
    if not rows:
        return
    fields = model._meta.concrete_fields
    now = timezone.now()
    json_fields = [(i, json_text_of(f)) for i, f in enumerate(fields) if isinstance(f, JSONField)]
    stamped = [i for i, f in enumerate(fields) if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
    values = itemgetter(*[f.attname for f in fields])

    def row(obj: dict) -> list:
        out = list(values(obj))
        for i, encode in json_fields:
            out[i] = encode(out[i])
        for i in stamped:
            out[i] = now
        return out

    copy_rows(model._meta.db_table, [f.column for f in fields], map(row, rows))
