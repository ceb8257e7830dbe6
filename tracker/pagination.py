"""An admin paginator that never counts a whole large table."""

from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most CAP + 1 rows of a filtered list; for an unfiltered table, uses the planner's row
    estimate when it is above the cap. Pages past the cap stay reachable."""

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if not hasattr(qs, "query"):
            return len(qs)
        if not qs.query.where:
            with connections[qs.db].cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [qs.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] > CAP:
                return int(row[0])
        # In the list's order: the count then walks the same index as the page (a count without an order may
        # pick a sequential scan that reads far into the table before it finds rows of a rare status).
        return qs[: CAP + 1].count()
