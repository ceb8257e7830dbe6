"""Exports as CSV or XLSX, streamed in bounded memory for any number of rows: the review queue, unmatched
expectations with their age, a period's transactions and a period-close summary. The API and the console serve
the same tables (`TABLES`); each is a header and an iterator of rows of plain values.

Text that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) is
written with a leading apostrophe in CSV and as a string cell in XLSX, so an exported file never executes what a
client sent."""

import csv
import datetime as dt
import io
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils import timezone

from recon import reports
from recon.models import Entry, EntryStatus, StagingEntry, TransactionStatus
from recon.selectors import staging_entries_in_review

FORMATS = ("csv", "xlsx")
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8",
                 "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
FETCH = 2000  # rows read from the database at a time
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Table:
    name: str
    header: list[str]
    rows: Iterable[list]


def _age_days(when: dt.datetime, now: dt.datetime) -> str:
    return f"{(now - when).total_seconds() / 86400:.2f}"


def review_queue(staging: QuerySet[StagingEntry]) -> Table:
    """The review queue of `staging` (already scoped and filtered by the caller), oldest first."""
    now = timezone.now()
    rows = (staging_entries_in_review(staging).select_related("account").order_by("created_at", "pk")
            .iterator(chunk_size=FETCH))
    return Table("review-queue", ["staging_entry_id", "account", "order_id", "entry_type", "amount", "currency",
                                  "effective_date", "processing_mode", "status", "error_type", "error", "age_days",
                                  "created_at"],
                 ([e.pk, e.account.account_name, e.metadata.get("order_id", ""), e.entry_type, e.amount, e.currency,
                   e.effective_date, e.processing_mode, e.status, e.metadata.get("error_type", ""),
                   e.metadata.get("error", ""), _age_days(e.created_at, now), e.created_at] for e in rows))


def unmatched_expectations(entries: QuerySet[Entry]) -> Table:
    """Open EXPECTED legs (of EXPECTED or MISMATCH transactions) of `entries`, oldest first, with their age."""
    now = timezone.now()
    rows = (entries.filter(status=EntryStatus.EXPECTED,
                           transaction__status__in=(TransactionStatus.EXPECTED, TransactionStatus.MISMATCH))
            .select_related("account", "transaction").order_by("created_at", "pk").iterator(chunk_size=FETCH))
    return Table("unmatched-expectations", ["entry_id", "logical_transaction_id", "transaction_status", "account",
                                            "order_id", "entry_type", "amount", "currency", "effective_date",
                                            "age_days", "created_at"],
                 ([e.pk, e.transaction.logical_transaction_id, e.transaction.status, e.account.account_name,
                   e.metadata.get("order_id", ""), e.entry_type, e.amount, e.currency, e.effective_date,
                   _age_days(e.created_at, now), e.created_at] for e in rows))


def period_transactions(*, merchant_id: str, start_date: dt.date, end_date: dt.date) -> Table:
    """Every ledger leg dated in the period (UTC days, both included), one row per leg with its transaction."""
    start = dt.datetime.combine(start_date, dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(end_date + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    rows = (Entry.objects.filter(account__merchant_id=merchant_id, effective_date__gte=start, effective_date__lt=end)
            .select_related("account", "transaction").order_by("effective_date", "transaction_id", "pk")
            .iterator(chunk_size=FETCH))
    return Table("transactions", ["transaction_id", "logical_transaction_id", "version", "transaction_status",
                                  "entry_id", "account", "entry_type", "amount", "currency", "entry_status",
                                  "effective_date"],
                 ([e.transaction_id, e.transaction.logical_transaction_id, e.transaction.version,
                   e.transaction.status, e.pk, e.account.account_name, e.entry_type, e.amount, e.currency, e.status,
                   e.effective_date] for e in rows))


def period_summary(*, merchant_id: str, start_date: dt.date, end_date: dt.date) -> Table:
    """The period-close summary (`recon.reports.period_summary`) as figure / value rows."""
    summary = reports.period_summary(merchant_id=merchant_id, start_date=start_date, end_date=end_date)
    rows = [["period", f"{summary['start_date']}..{summary['end_date']}"],
            *[[f"staging entries {s}", n] for s, n in summary["staging_entries"]["by_status"].items()],
            ["in the review queue", summary["open_review"]],
            *[[f"ledger entries {s}", n] for s, n in summary["entries"]["by_status"].items()],
            *[[f"amount {currency} {status}", f"{v['total']} ({v['count']} entries)"]
              for currency, by in summary["amounts_by_currency"].items() for status, v in by.items()],
            ["generated_at", summary["generated_at"]]]
    return Table("period-summary", ["figure", "value"], rows)


def _cell(value):
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if value is None:
        return ""
    return value if isinstance(value, int | float) else str(value)


def _safe(value) -> str:
    text = str(_cell(value))
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_stream(table: Table) -> Iterator[bytes]:
    """The table as CSV bytes (UTF-8 with a BOM, so spreadsheets read the encoding), a chunk per FETCH rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")
    writer.writerow(table.header)
    for n, row in enumerate(table.rows, 1):
        writer.writerow([_safe(v) for v in row])
        if n % FETCH == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def xlsx_stream(table: Table) -> Iterator[bytes]:
    """The table as an XLSX workbook (openpyxl's write-only mode: rows go to disk as they come), then its bytes."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    book = Workbook(write_only=True)
    sheet = book.create_sheet(table.name[:31])
    sheet.append(table.header)
    for row in table.rows:
        cells = []
        for value in row:
            value = _cell(value)
            cell = WriteOnlyCell(sheet, value=value)
            if isinstance(value, str) and value.startswith(FORMULA_START):
                cell.data_type = "s"  # a string, never a formula
            cells.append(cell)
        sheet.append(cells)
    with tempfile.TemporaryFile() as out:
        book.save(out)
        out.seek(0)
        while chunk := out.read(1 << 16):
            yield chunk


RENDERERS: dict[str, Callable[[Table], Iterator[bytes]]] = {"csv": csv_stream, "xlsx": xlsx_stream}


def filename(table: Table, fmt: str) -> str:
    return f"{table.name}-{timezone.now():%Y%m%d-%H%M%S}.{fmt}"
