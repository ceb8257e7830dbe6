"""CSV import of staging entries (shared/API.md, "CSV import"): a streaming, resumable parser and validator.

Memory stays bounded for any file size: rows are read lazily from an iterable of text lines and written in
chunks; each chunk (its staging entries and their tracker tasks) commits in one database transaction together
with the caller's checkpoint (`on_chunk`)."""

import contextlib
import csv
import dataclasses
import datetime as dt
import hashlib
import json
import operator
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils.dateparse import parse_date, parse_datetime

from recon import services, statements
from recon.currencies import ISO_4217, is_currency
from recon.errors import ReconError
from recon.models import MONEY_QUANTUM, Account, AccountType, ProcessingMode, StagingEntry
from recon.validation import MATCH_VALUE_MAX_CHARS, match_value_problem
from tracker.bulk import array_literal, copy_text

COLUMNS = ("order_id", "amount", "currency", "transaction_date", "type")
TYPES = {"payment", "refund", "debit", "credit"}
CHUNK_ROWS = 5000  # data rows written (and checkpointed) per database transaction
MAX_ERRORS_KEPT = 1000  # row errors kept in a report (`failed_ingestions` counts all)


class InvalidCsvError(ReconError):
    """The file is not a valid staging-entry CSV."""

    code = "invalid_csv"
    status = 400


def content_sha256(chunks: Iterable[bytes]) -> str:
    """sha256 hex digest of a file's content, read in chunks (for duplicate-upload detection)."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def side_for(type_value: str, account_type: str) -> str:
    """Payment is DEBIT on a DEBIT_NORMAL account and CREDIT on a CREDIT_NORMAL one, Refund the opposite;
    Debit and Credit are taken literally."""
    kind = type_value.strip().lower()
    if kind in ("debit", "credit"):
        return kind.upper()
    normal = "DEBIT" if account_type == AccountType.DEBIT_NORMAL else "CREDIT"
    other = "CREDIT" if normal == "DEBIT" else "DEBIT"
    return normal if kind == "payment" else other


def midnight_utc(day: dt.date) -> dt.datetime:
    """The moment an entry dated `day` (without a time) takes effect: midnight UTC."""
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def parse_when(text: str, date_format: str | None = None) -> dt.datetime | None:
    """A date (midnight UTC) or a date-time with timezone, or with `date_format` (strftime) whatever that reads
    (UTC unless it carries an offset); None when neither."""
    if date_format:
        try:
            when = dt.datetime.strptime(text, date_format)
        except ValueError:
            return None
        return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    try:
        day = parse_date(text)
        if day is not None:
            return midnight_utc(day)
        when = parse_datetime(text)
    except ValueError:
        return None
    return when if when is not None and when.tzinfo is not None else None


def _parses(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except (InvalidOperation, ValueError):
        return False


def amount_problem(amount: Decimal) -> str | None:
    """Why an amount cannot be a staging entry's (every import format), else None."""
    if amount <= 0:
        return "amount must be positive"
    if amount > services.MAX_AMOUNT:  # first: quantizing a huge number raises
        return "amount is too large"
    if amount != amount.quantize(MONEY_QUANTUM):
        return "amount has more than 4 decimal places"
    return None


def _csv_amount(raw: str) -> tuple[Decimal | None, str | None]:
    """A CSV cell's amount (plain ASCII decimals only) and the problem with it, if any."""
    if not PLAIN_AMOUNT.fullmatch(raw):
        hint = ""
        if "," in raw or _parses(raw):
            hint = " (digits 0-9 and one '.' only: no thousands separators, underscores, exponents or other digits)"
        return None, f"amount {report_text(raw)!r} is not a number{hint}"
    try:
        amount = Decimal(raw)
    except (InvalidOperation, ValueError):
        return None, f"amount {report_text(raw)!r} is not a number"
    if not amount.is_finite():
        return None, f"amount {report_text(raw)!r} is not a number"
    return amount, amount_problem(amount)


def validate_row(
    row: dict,
    *,
    account: Account,
    processing_mode: str,
    source_file: str,
    date_format: str | None = None,
    extras: dict | None = None,
) -> tuple[dict | None, list]:
    """Returns (staging entry fields, []) for a good row (our fields under their default names; `extras`: the
    file's other columns, kept in the metadata) or (None, problems)."""
    problems = [p for name, text in (extras or {}).items() if (p := cell_problem(name, text)) is not None]
    for column in COLUMNS:
        if not (row.get(column) or "").strip():
            problems.append(f"{column} is empty")
    for column in COLUMNS:
        if (text := row.get(column)) and (problem := cell_problem(column, text)) is not None:
            problems.append(problem)
    if (problem := match_value_problem("order_id", (row.get("order_id") or "").strip())) is not None:
        problems.append(problem)
    amount = when = None
    raw_amount = (row.get("amount") or "").strip()
    if raw_amount:
        amount, problem = _csv_amount(raw_amount)
        if problem:
            problems.append(problem)
    currency = (row.get("currency") or "").strip().upper()  # any case accepted, stored upper
    if currency and not is_currency(currency):
        problems.append(f"currency {report_text(currency)!r} is not an ISO 4217 code")
    raw_date = (row.get("transaction_date") or "").strip()
    if raw_date and (when := parse_when(raw_date, date_format)) is None:
        expected = f"a date as {date_format}" if date_format else "a date (YYYY-MM-DD) or a date-time with timezone"
        problems.append(f"transaction_date {report_text(raw_date)!r} is not {expected}")
    kind = (row.get("type") or "").strip()
    if kind and kind.lower() not in TYPES:
        problems.append(f"type {report_text(kind)!r} is not one of Payment, Refund, Debit, Credit")
    if problems:
        return None, problems
    return {
        "entry_type": side_for(kind, account.account_type),
        "amount": amount.quantize(MONEY_QUANTUM),
        "currency": currency,
        "effective_date": when,
        "processing_mode": processing_mode,
        "metadata": {**(extras or {}), "order_id": row["order_id"].strip(), "source_file": source_file},
    }, []


MAPPING_OPTIONS = ("date_format", "decimal_separator", "delimiter")


@dataclasses.dataclass(frozen=True)
class CsvLayout:
    """Where a file keeps our fields (API.md "File import", `mapping`): `columns` maps each field to its column
    index (a mapped file without a `type` column: a negative amount is a Refund, a positive one a Payment),
    `extras` the other columns (header name, index), kept in the entry's metadata. `plain` is the default layout
    with nothing extra."""

    header: list[str]
    columns: dict[str, int]
    extras: list[tuple[str, int]]
    date_format: str | None = None
    decimal_separator: str = "."
    delimiter: str = ","

    @property
    def plain(self) -> bool:
        return (
            not self.extras
            and self.date_format is None
            and self.decimal_separator == "."
            and "type" in self.columns
            and all(self.header[i] == f for f, i in self.columns.items())
        )


def mapping_problems(mapping) -> dict:
    """Field -> problems of a `mapping` (a JSON object: our fields to the file's column names, plus
    MAPPING_OPTIONS); {} when it is usable."""
    if not isinstance(mapping, dict):
        return {"mapping": ["A JSON object: our field names to the file's column names."]}
    problems: dict[str, list[str]] = {}
    for key, value in mapping.items():
        if key not in (*COLUMNS, *MAPPING_OPTIONS):
            problems[key] = [f"Not a field ({', '.join(COLUMNS)}) or an option ({', '.join(MAPPING_OPTIONS)})."]
        elif not isinstance(value, str) or not value.strip() or cell_problem(key, value) is not None:
            problems[key] = ["A non-empty text."]
    if mapping.get("decimal_separator", ".") not in (".", ","):
        problems["decimal_separator"] = ["`.` or `,`."]
    if len(mapping.get("delimiter", ",")) != 1 or mapping.get("delimiter", ",") in ('"', "\n", "\r"):
        problems["delimiter"] = ["One character (not a quote or a line break)."]
    if "date_format" in mapping and "date_format" not in problems:
        sample, fmt = dt.datetime(2026, 11, 23, 14, 5, 6), mapping["date_format"]
        try:
            readable = dt.datetime.strptime(sample.strftime(fmt), fmt).date() == sample.date()
        except ValueError:
            readable = False
        if not readable:
            problems["date_format"] = ["A strftime format that reads a whole date, e.g. `%d.%m.%Y`."]
    return problems


def csv_layout(header: list[str], mapping: dict | None = None) -> CsvLayout:
    """The layout of a file with this header (cells as read) under `mapping`; InvalidCsvError (400) naming the
    missing columns. Default column names are matched in any case, mapped names exactly (then in any case)."""
    mapping = mapping or {}
    names = [h.strip().lstrip("\ufeff").strip() for h in header]
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        raise InvalidCsvError("The header names a column twice.", details={"header": names})
    columns, missing = {}, []
    for field in COLUMNS:
        wanted = mapping.get(field, field)
        index = (
            names.index(wanted)
            if wanted in names
            else (lowered.index(wanted.lower()) if wanted.lower() in lowered else None)
        )
        if index is not None:
            columns[field] = index
        elif field != "type" or "type" in mapping or not mapping:  # a mapped file may leave the type to the sign
            missing.append(wanted)
    if missing:
        raise InvalidCsvError(
            f"The header must name the columns {', '.join(mapping.get(c, c) for c in COLUMNS)}; missing: "
            f"{', '.join(missing)}.",
            details={"header": names, "missing": missing},
        )
    taken = set(columns.values())
    return CsvLayout(
        header=names,
        columns=columns,
        extras=[(n, i) for i, n in enumerate(names) if i not in taken],
        date_format=mapping.get("date_format"),
        decimal_separator=mapping.get("decimal_separator", "."),
        delimiter=mapping.get("delimiter", ","),
    )


def _rows(lines: Iterable[str], mapping: dict | None = None) -> tuple[CsvLayout, Iterator[list[str]]]:
    reader = csv.reader(iter(lines), delimiter=(mapping or {}).get("delimiter", ","))
    header = next(reader, None)
    if header is None:
        raise InvalidCsvError(f"The file is empty: a header row is required ({', '.join(COLUMNS)}).")
    return csv_layout(header, mapping), _guarded(reader)


def mapped_row(cells: list[str], layout: CsvLayout) -> tuple[dict, dict]:
    """(our fields as the default layout's texts, the other columns for the metadata) of a row read with
    `layout`: amounts with a decimal comma get a point, and without a type column the sign gives the type."""
    row = {field: cells[i] if i < len(cells) else "" for field, i in layout.columns.items()}
    amount = row.get("amount", "").strip()
    if layout.decimal_separator == "," and "." not in amount:
        amount = amount.replace(",", ".", 1)
    if "type" not in layout.columns:
        row["type"] = "refund" if amount.startswith("-") else "payment"
        amount = amount.removeprefix("-")
    row["amount"] = amount
    extras = {name: cells[i] for name, i in layout.extras if i < len(cells)}
    return row, extras


class UnreadableRow(str):
    """Yielded by `_guarded` in place of a row the csv module could not read (e.g. a field over its 128 KiB
    limit): the problem text. The reader goes on with the next line, so it is one row error."""


def _guarded(reader) -> Iterator[list[str] | UnreadableRow]:
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield UnreadableRow(f"the row cannot be read as CSV (line {reader.line_num}): {exc}")


# Invalid UTF-8 is decoded with "surrogateescape" (recon.uploads.open_lines): each bad byte becomes a lone
# surrogate U+DC80..U+DCFF, so a row holding one is a row error and the other rows are imported.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPORT_CELL_MAX_CHARS = 200


def cell_problem(column: str, text: str) -> str | None:
    """Why a cell's text cannot be imported (a NUL, bytes that are not UTF-8), else None."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return f"{column} contains a NUL character"
    if "\udc80" <= found.group() <= "\udcff":
        return f"{column} is not valid UTF-8 text"
    return f"{column} contains a lone surrogate"


def report_text(text: str) -> str:
    """A cell as the report shows it: storable (NUL and undecodable bytes as U+FFFD) and at most
    REPORT_CELL_MAX_CHARS characters (longer ones end in "...")."""
    text = _UNSTORABLE.sub("\ufffd", text)
    return text if len(text) <= REPORT_CELL_MAX_CHARS else text[:REPORT_CELL_MAX_CHARS] + "..."


def empty_report() -> dict:
    return {"successful_ingestions": 0, "failed_ingestions": 0, "errors": []}


# Fast path of the per-row check. A row that passes it would pass `validate_row` too and gives the same
# fields; any other row goes through `validate_row`, so the report's error texts never change.
_AMOUNT_FAST = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,4})?")  # <= 4 decimals and <= MAX_AMOUNT by construction
# What a CSV amount may look like at all (ASCII digits, an optional sign and '.'): `1,000.00`, `5_000`, `1e3`
# and non-ASCII digits are all refused alike (docs/recon.md, "CSV amounts").
PLAIN_AMOUNT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_WHEN_CACHE_MAX = 4096


def _when_text(raw_date: str, cache: dict) -> str | None:
    """The effective date of a (stripped, non-empty) transaction_date as timestamptz text, or None when invalid;
    memoized (files repeat a handful of dates)."""
    try:
        return cache[raw_date]
    except KeyError:
        pass
    when = parse_when(raw_date)
    text = when.isoformat() if when is not None else None
    if len(cache) >= _WHEN_CACHE_MAX:
        cache.clear()
    cache[raw_date] = text
    return text


class ChunkWriter:
    """The one writer of every import format: collects a chunk's valid rows (tuples for
    `services.staging_entries_create_rows`), row errors and skipped duplicates, and commits them in ONE database
    transaction together with the caller's checkpoint (`on_chunk(rows_done, report)`, called inside it;
    returning False stops the import after that chunk). `before_write(rows)` may drop rows just before they are
    written, inside that transaction (overlapping statement lines); it returns the rows to keep, which `write(rows)`
    writes (default: `services.staging_entries_create_rows`)."""

    def __init__(
        self,
        *,
        account: Account,
        report: dict,
        on_chunk=None,
        chunk_rows: int = CHUNK_ROWS,
        max_errors: int = MAX_ERRORS_KEPT,
        before_write: Callable[[list], list] | None = None,
        write: Callable[[list], object] | None = None,
    ):
        self.account, self.report, self.on_chunk = account, report, on_chunk
        self.chunk_rows, self.max_errors, self.before_write = chunk_rows, max_errors, before_write
        self.write = write or (lambda rows: services.staging_entries_create_rows(account=account, rows=rows))
        self.pending: list = []
        self.errors: list[dict] = []
        self.failed = self.seen = 0

    def add(self, row) -> None:
        self.pending.append(row)
        self.seen += 1

    def fail(self, row_number: int, details: str, row_data: dict) -> None:
        self.failed += 1
        self.seen += 1
        if len(self.errors) < self.max_errors:
            self.errors.append({"row_number": row_number, "error_details": details, "row_data": row_data})

    def full(self) -> bool:
        return self.seen >= self.chunk_rows

    def flush(self, rows_done: int) -> bool:
        """Commits the chunk; False when the caller asked to stop."""
        report = self.report
        with transaction.atomic():
            services.commit_asynchronously()
            rows = self.before_write(self.pending) if self.before_write else self.pending
            if rows:
                self.write(rows)
            report["successful_ingestions"] += len(rows)
            report["failed_ingestions"] += self.failed
            if len(rows) != len(self.pending):
                report["duplicates_skipped"] = report.get("duplicates_skipped", 0) + len(self.pending) - len(rows)
            room = max(0, self.max_errors - len(report["errors"]))
            report["errors"].extend(self.errors[:room])
            keep_going = self.on_chunk(rows_done, report) if self.on_chunk else None
        self.pending, self.errors, self.failed, self.seen = [], [], 0, 0
        return keep_going is not False

    def finish(self, rows_done: int) -> None:
        """Commits the last chunk (also an empty one when a checkpoint is kept, so the caller's state is saved)."""
        if self.seen or self.on_chunk is not None:
            self.flush(rows_done)


def _fast_path(layout: CsvLayout, account: Account, processing_mode: str, source_file: str):
    """For the default layout: a function from a row's cells to its staging row, or None when the row needs
    the full check. A row it accepts would pass `validate_row` too and gives the same fields; any other row goes
    through `validate_row`, so the report's error texts never change."""
    width = len(layout.header)
    pick = operator.itemgetter(*[layout.columns[c] for c in COLUMNS])
    sides = {kind: side_for(kind, account.account_type) for kind in TYPES}
    currencies, amount_ok, unstorable = ISO_4217, _AMOUNT_FAST.fullmatch, _UNSTORABLE.search
    when_cache: dict[str, str | None] = {}
    # metadata {"order_id": ..., "source_file": ...} as JSON text, built by concatenation
    md_head, md_tail = '{"order_id": ', f', "source_file": {json.dumps(source_file)}}}'
    quote = json.encoder.encode_basestring_ascii

    def row(cells: list[str]) -> tuple | None:
        if len(cells) != width:
            return None
        order_id, raw_amount, currency, raw_date, kind = pick(cells)
        order_id, raw_amount, currency, raw_date = (
            order_id.strip(),
            raw_amount.strip(),
            currency.strip().upper(),
            raw_date.strip(),
        )
        side = sides.get(kind.strip().lower())
        if (
            side is None
            or not order_id
            or currency not in currencies
            or not raw_date
            or len(order_id) > MATCH_VALUE_MAX_CHARS
            or unstorable(order_id)
            or not amount_ok(raw_amount)
            or not raw_amount.strip("0.")
            or (when := _when_text(raw_date, when_cache)) is None
        ):
            return None
        return side, raw_amount, currency, when, processing_mode, md_head + quote(order_id) + md_tail

    return row


def _checked_row(cells: list[str], layout: CsvLayout, **context) -> tuple[tuple | None, list[str], dict]:
    """The full check of one row: (staging row or None, problems, the row's data for the report)."""
    row, extras = mapped_row(cells, layout)
    problems = [] if len(cells) == len(layout.header) else [f"expected {len(layout.header)} columns, got {len(cells)}"]
    fields, row_problems = validate_row(row, date_format=layout.date_format, extras=extras, **context)
    problems += row_problems
    row_data = {c: report_text(row.get(c, "")) for c in COLUMNS}
    if problems:
        return None, problems, row_data
    return (
        (
            fields["entry_type"],
            fields["amount"],
            fields["currency"],
            fields["effective_date"],
            fields["processing_mode"],
            fields["metadata"],
        ),
        [],
        row_data,
    )


def ingest_csv(
    *,
    account: Account,
    lines: Iterable[str],
    processing_mode: str,
    source_file: str,
    mapping: dict | None = None,
    start_row: int = 0,
    chunk_rows: int = CHUNK_ROWS,
    on_chunk: Callable[[int, dict], bool | None] | None = None,
    report: dict | None = None,
    max_errors: int = MAX_ERRORS_KEPT,
) -> dict:
    """Streams `lines` (text lines of a CSV file, header first; its columns per `mapping`) into staging entries
    and their tracker tasks.

    Rows 1..`start_row` (data rows, the header is not a row) are skipped, so a caller resumes from its
    checkpoint by passing the `rows_done` it last saw and the `report` it saved. Every `chunk_rows` data rows,
    the chunk's valid rows are inserted in ONE database transaction, and `on_chunk(rows_done, report)` is
    called inside it (checkpoint there); returning False stops the import after that chunk. Returns the
    report {"successful_ingestions", "failed_ingestions", "errors": [{"row_number", "error_details",
    "row_data"}]} (at most `max_errors` errors are kept; `failed_ingestions` counts all)."""
    if processing_mode not in ProcessingMode.values:
        raise InvalidCsvError(f"processing_mode must be one of {', '.join(ProcessingMode.values)}.")
    report = report if report is not None else empty_report()
    layout, reader = _rows(lines, mapping)
    fast = _fast_path(layout, account, processing_mode, source_file) if layout.plain else None
    context = {"account": account, "processing_mode": processing_mode, "source_file": source_file}
    chunks = ChunkWriter(
        account=account, report=report, on_chunk=on_chunk, chunk_rows=chunk_rows, max_errors=max_errors
    )
    row_number = 0
    for cells in reader:
        unreadable = isinstance(cells, UnreadableRow)
        if not unreadable and (not cells or all(not c.strip() for c in cells)):
            continue  # blank lines are not rows
        row_number += 1
        if row_number <= start_row:
            continue
        if unreadable:
            chunks.fail(row_number, str(cells), {c: "" for c in COLUMNS})
        elif fast is not None and (values := fast(cells)) is not None:
            chunks.add(values)
        else:
            values, problems, row_data = _checked_row(cells, layout, **context)
            if problems:
                chunks.fail(row_number, "; ".join(problems), row_data)
            else:
                chunks.add(values)
        if chunks.full() and not chunks.flush(row_number):
            return report
    chunks.finish(row_number)
    return report


# Statements -----------------------------------------------------------------------------------------------------


def line_key(line: statements.Line) -> str:
    """The overlap key of a statement line (API.md "Overlapping statements"): the bank reference, booking date,
    direction, amount and currency; without a reference, the remittance info instead of it."""
    return _line_key(line, None, str(line.booking_date or line.effective_date))


def _line_key(line: statements.Line, amount: str | None, day: str) -> str:
    """`line_key` with the amount's text (`format(quantized, "f")`, None: made here) and the day's text given."""
    if amount is None:
        try:
            amount = format(line.amount.quantize(MONEY_QUANTUM), "f")
        except InvalidOperation:  # too many digits to quantize: a row error anyway
            amount = str(line.amount)
    parts = (line.bank_reference or "\x00" + line.remittance_info, day, line.direction, amount, line.currency)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def statement_line_problems(line: statements.Line) -> list[str]:
    """Why a statement line cannot be a staging entry (its amount, currency or dates), else []."""
    problems = []
    if (problem := amount_problem(line.amount)) is not None:
        problems.append(problem)
    if not is_currency(line.currency):
        problems.append(f"currency {line.currency!r} is not an ISO 4217 code")
    if line.effective_date is None:
        problems.append("the line has neither a value date nor a booking date")
    return problems


# -- statement_line_counts --
# How many staging entries of the account, imported from other uploads, carry each of these overlap keys (only
# keys with some): per key, one lookup in recon_staging_line_key (statement lines only, the key alone, in
# collation "C"), so the cost follows the chunk's size, not the account's. Written as a LATERAL join: with
# `= ANY(keys)` the planner scans every entry of the account instead (it expects each key to match a row). The
# account is compared as text, a filter on the rows found by key and no index condition: as `account_id = ...` the
# planner took the account's index (recon_staging_account_status) for an account it has no statistics for yet (a
# new account's first import: estimated one row), and each chunk then read every entry imported so far once per
# key (a 20,000-line file: 100 s). Run with JIT off (`_Overlaps.keep`): the plan's cost estimate is high enough to
# trigger JIT compilation, which costs more than the lookups themselves (docs/statements.md, "Speed").
STATEMENT_LINE_COUNTS = f"""
SELECT k.key, n.count FROM unnest(%(keys)s::text[]) AS k(key)
CROSS JOIN LATERAL (
    SELECT count(*) FROM {StagingEntry._meta.db_table} s
    WHERE s.metadata ? 'line_key' AND (s.metadata ->> 'line_key') COLLATE "C" = k.key
      AND s.account_id::text = %(account)s AND s.metadata ->> 'upload_id' <> %(upload)s
) n
WHERE n.count > 0"""


class _Overlaps:
    """Drops the lines of a chunk that an earlier file already imported to the account: a line whose key is the
    k-th of that key in this file (its spool row says which) is a duplicate when other uploads imported k or more
    lines with that key. A chunk's rows are `(occurrence, key, COPY text)` (the occurrence as its text); the COPY
    texts of the lines to write are returned."""

    def __init__(self, account: Account, upload_id: str):
        self.account, self.upload_id = account, str(upload_id)

    def keep(self, rows: list) -> list:
        """Inside the chunk's transaction, with the account locked (one import decides at a time)."""
        if not rows:
            return rows
        Account.objects.select_for_update().filter(pk=self.account.pk).first()
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")  # for the rest of the chunk's transaction
            cursor.execute(
                STATEMENT_LINE_COUNTS,
                {
                    "account": str(self.account.pk),
                    "upload": self.upload_id,
                    "keys": array_literal(sorted({r[1] for r in rows})),
                },
            )
            earlier = dict(cursor.fetchall())
        if not earlier:
            return [text for _, _, text in rows]
        return [text for occurrence, key, text in rows if int(occurrence) > earlier.get(key, 0)]


def statement_spool_path(*, upload_id, fmt: str, processing_mode: str, account_type: str) -> Path:
    """Where the parsed rows of an upload's statement import are kept between the parse and the writes (one file
    per upload and what its rows depend on; SPOOL_VERSION changes with the file's layout)."""
    return spool_dir() / f"{upload_id}-{fmt}-{processing_mode}-{account_type}-v{SPOOL_VERSION}.rows"


def spool_dir() -> Path:
    """settings.RECON_IMPORT_SPOOL_DIR (or the environment variable), else `recon-import-spool` in the system's
    temporary directory: local disk of the worker (a resume on another machine parses the file again)."""
    configured = getattr(settings, "RECON_IMPORT_SPOOL_DIR", None) or os.environ.get("RECON_IMPORT_SPOOL_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "recon-import-spool"


SPOOL_VERSION = 2
SPOOL_MAX_AGE_SECONDS = 2 * 86400  # spools older than this are left-overs of imports that never finished


def statement_spool(
    *, account: Account, fmt: str, stream, processing_mode: str, source_file: str, upload_id, path: Path
) -> dict:
    """The one parse of a statement file: every line becomes its spool row (a staging row as COPY-ready text, or
    its row error) in the file `path`, and the statements' figures go to `path` + ".json"; returns that
    {"lines", "statements"}. Both files appear only once the whole file has parsed (written under temporary
    names, then renamed), so a StatementParseError (a broken file: the format and where) leaves no spool and
    nothing is written to the database. The spool holds one line per statement line, tab-separated: occurrence
    of its overlap key in this file, the key, position, then the row's COPY text as
    `services.staging_entries_create_copy_text` takes it (`entry_type, amount, currency, effective_date,
    metadata`, escaped for COPY), or `!`, the problems and the row's data (JSON). `processing_mode` is the
    import's (the spool's path names it; the rows leave it to the writer). JSON text has no raw tab or newline."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    _spool_sweep(directory)
    quote = json.encoder.encode_basestring_ascii
    shared = f'"source_file":{quote(source_file)},"format":{quote(fmt)},"upload_id":"{upload_id}","line_key":"'
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=path.name + ".", suffix=".tmp")
    try:
        with open(fd, "w", encoding="ascii", buffering=1 << 20) as out:
            lines, found = _spool_write(
                out.write, statements.parse(fmt, stream), account=account, shared=copy_text(shared)
            )
        meta = {"lines": lines, "statements": [statement_summary(s) for s in found]}
        meta_path = path.with_name(path.name + ".json")
        meta_tmp = f"{tmp}.json"
        Path(meta_tmp).write_text(json.dumps(meta))
        os.replace(meta_tmp, meta_path)
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, f"{tmp}.json"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        raise
    return meta


def _spool_write(write, items, *, account: Account, shared: str) -> tuple[int, list]:
    """Writes the spool row of each statement line of `items` (a parser's output) with `write`; returns the number
    of lines and the statements found. `shared` is the metadata JSON every line of the file ends with, up to its
    line key (escaped for COPY)."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    quote = json.encoder.encode_basestring_ascii
    # The metadata's JSON text, built by concatenation: the line's non-empty texts (`Line.metadata_texts`, read
    # here with one attrgetter), its dates, `reversal`, then what every line of the file shares, then its key.
    prefixes = [f'"{name}":' for name in statements.TEXT_FIELDS]
    texts_of = statements.text_fields
    reversal = {True: '"reversal":true,', False: '"reversal":false,'}
    # Money in is the account's normal side (DEBIT on DEBIT_NORMAL), money out the other.
    sides = {
        statements.IN: side_for("payment", account.account_type),
        statements.OUT: side_for("refund", account.account_type),
    }
    day_texts: dict = {}  # effective date -> its midnight UTC as timestamptz text
    date_texts: dict = {None: ""}  # date -> its ISO text
    occurrences: dict[str, int] = {}
    found: list[statements.Statement] = []
    currencies, quantum, most = ISO_4217, MONEY_QUANTUM, services.MAX_AMOUNT
    lines = 0
    for item in items:
        if isinstance(item, statements.Line):
            lines += 1
        else:
            found.append(item)
            continue
        amount, day, booked = item.amount, item.value_date or item.booking_date, item.booking_date
        exact = amount.quantize(quantum) if 0 < amount <= most else None
        if exact != amount or item.currency not in currencies:
            exact = None  # the full check below says why
        if (booked_text := date_texts.get(booked)) is None:
            date_texts[booked] = booked_text = booked.isoformat()
        key = _line_key(item, format(exact, "f") if exact is not None else None, booked_text or str(day))
        occurrences[key] = occurrence = occurrences.get(key, 0) + 1
        if exact is None or day is None:
            problems = statement_line_problems(item)
            write(f"{occurrence}\t{key}\t{item.position}\t!\t{dumps('; '.join(problems))}\t{dumps(_line_data(item))}\n")
            continue
        texts = "".join([f"{p}{quote(t)}," for p, t in zip(prefixes, texts_of(item)) if t])
        if "\\" in texts:
            texts = copy_text(texts)
        if booked_text:
            texts += f'"booking_date":"{booked_text}",'
        if (value := item.value_date) is not None:
            if (value_text := date_texts.get(value)) is None:
                date_texts[value] = value_text = value.isoformat()
            texts += f'"value_date":"{value_text}",'
        if (day_text := day_texts.get(day)) is None:
            day_texts[day] = day_text = midnight_utc(day).isoformat()
        write(
            f"{occurrence}\t{key}\t{item.position}\t{sides[item.direction]}\t{exact}\t{item.currency}\t{day_text}"
            f'\t{{{texts}{reversal[item.reversal]}{shared}{key}"}}\n'
        )
    return lines, found


def statement_spool_meta(path: Path) -> dict | None:
    """The {"lines", "statements"} of a complete spool at `path`, None when there is none (never made, made on
    another machine, or removed)."""
    try:
        if path.exists():
            return json.loads(path.with_name(path.name + ".json").read_text())
    except (FileNotFoundError, ValueError):
        pass
    return None


def statement_spool_remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".json")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _spool_sweep(directory: Path) -> None:
    """Removes spools (and half-written ones) older than SPOOL_MAX_AGE_SECONDS: imports that never finished."""
    cutoff = time.time() - SPOOL_MAX_AGE_SECONDS
    for old in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if old.stat().st_mtime < cutoff:
                old.unlink()


def ingest_statement(
    *,
    account: Account,
    spool: Path,
    processing_mode: str,
    upload_id,
    start_row: int = 0,
    chunk_rows: int = CHUNK_ROWS,
    on_chunk: Callable[[int, dict], bool | None] | None = None,
    report: dict | None = None,
    max_errors: int = MAX_ERRORS_KEPT,
) -> dict:
    """Streams the rows of a statement file's spool (`statement_spool`: parsed once, whole) into staging entries,
    with the same chunks and checkpoints as `ingest_csv` (`start_row` counts lines, `on_chunk(rows_done,
    report)`). Lines that an earlier upload to the account already imported are skipped (`duplicates_skipped`).
    The report also holds `statements`: each statement's figures (`statement_summary`), once every row is read."""
    report = report if report is not None else empty_report()
    report.setdefault("duplicates_skipped", 0)
    chunks = ChunkWriter(
        account=account,
        report=report,
        on_chunk=on_chunk,
        chunk_rows=chunk_rows,
        max_errors=max_errors,
        before_write=_Overlaps(account, upload_id).keep,
        write=lambda texts: services.staging_entries_create_copy_text(
            account=account, processing_mode=processing_mode, tails=texts
        ),
    )
    meta = statement_spool_meta(spool)
    if meta is None:
        raise FileNotFoundError(f"no statement spool at {spool}")
    position = 0
    with open(spool, encoding="ascii") as rows:
        for text in rows:
            occurrence, key, number, tail = text.split("\t", 3)
            position = int(number)
            if position <= start_row:
                continue
            if tail[0] == "!":
                _, details, data = tail.split("\t")
                chunks.fail(position, json.loads(details), json.loads(data))
            else:
                chunks.add((occurrence, key, tail))  # the row's COPY text, as it goes to COPY
            if chunks.full() and not chunks.flush(position):
                return report
    report["statements"] = meta["statements"]
    chunks.finish(position)
    return report


def _line_data(line: statements.Line) -> dict:
    return {
        "amount": str(line.amount),
        "direction": line.direction,
        "currency": line.currency,
        "booking_date": str(line.booking_date or ""),
        "bank_reference": line.bank_reference,
    }


def statement_summary(s: statements.Statement) -> dict:
    """A statement's figures as JSON values (the import's result, and what `BankStatement` stores)."""
    money = lambda v: None if v is None else str(v)  # noqa: E731
    day = lambda v: None if v is None else v.isoformat()  # noqa: E731
    return {
        "statement_id": s.statement_id,
        "account": s.account,
        "currency": s.currency,
        "sequence": s.sequence,
        "opening_balance": money(s.opening_balance),
        "closing_balance": money(s.closing_balance),
        "opening_date": day(s.opening_date),
        "closing_date": day(s.closing_date),
        "lines": s.line_count,
        "lines_total": str(s.lines_total),
        "balanced": s.balanced,
    }
