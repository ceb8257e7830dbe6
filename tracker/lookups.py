"""`field__any=[...]`: membership in a list, sent to PostgreSQL as ONE array parameter (`col = ANY(%s)`)
instead of `IN (%s, %s, ...)` with a placeholder per value. Batches filter on up to a thousand ids at a time:
the list goes as one array literal (`tracker.bulk.array_literal`) instead of a thousand placeholders, and the
statement text stays the same for every batch size. Other databases get the plain IN list."""

from django.core.exceptions import EmptyResultSet
from django.db.models import Field, ForeignObject, Lookup

from tracker.bulk import array_literal

# Array element types for the cast; other fields let psycopg type the list from its Python values.
_ARRAY_TYPES = {
    "UUIDField": "uuid",
    "CharField": "text",
    "TextField": "text",
    "BigIntegerField": "bigint",
    "IntegerField": "integer",
    "BigAutoField": "bigint",
    "AutoField": "integer",
}


class ArrayAny(Lookup):
    lookup_name = "any"
    prepare_rhs = False

    def get_prep_lookup(self):
        field = self.lhs.output_field
        return [field.get_prep_value(v) for v in self.rhs]

    def _values(self, connection) -> list:
        values = [self.lhs.output_field.get_db_prep_value(v, connection, prepared=True) for v in self.rhs]
        if not values:
            raise EmptyResultSet
        return values

    def as_sql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        values = self._values(connection)
        return f"{lhs} IN ({', '.join(['%s'] * len(values))})", (*params, *values)

    def as_postgresql(self, compiler, connection):
        lhs, params = self.process_lhs(compiler, connection)
        values = self._values(connection)
        field = self.lhs.output_field
        element = _ARRAY_TYPES.get(getattr(field, "target_field", field).get_internal_type())
        if element is None:
            return f"{lhs} = ANY(%s)", (*params, values)
        return f"{lhs} = ANY(%s::{element}[])", (*params, array_literal(values))


def connect() -> None:
    """Installs `__any` on every field (from TrackerConfig.ready); foreign keys keep their own lookups, hence
    ForeignObject too: `transaction_id__any=[...]`."""
    Field.register_lookup(ArrayAny)
    ForeignObject.register_lookup(ArrayAny)
