"""BAI2 cash management balance reports (our own reader: the `bai2` package says it is not production-ready).

Records end with `/` and may continue on `88` records; `03` opens an account (currency, summary balances),
`16` is a transaction detail, `49` closes the account with its control total. Amounts are in the currency's minor
units (implied decimals, 2 unless the currency has another number); type codes 100-399 are money in, 400-699 money
out; detail records with other codes carry no money movement and are not lines."""

from collections.abc import Iterator
from decimal import Decimal

from recon.currencies import minor_units
from recon.statements.base import IN, OUT, Line, Statement, StatementParseError, clean, short_date

FMT = "bai2"
OPENING_LEDGER, CLOSING_LEDGER = "010", "015"


def _records(stream) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) per logical record: `88` continuations joined to their record, the `/` end dropped.
    A `16` record's last field is free text and may hold commas."""
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(stream, 1):
        text = raw.decode("utf-8", errors="replace").strip() if isinstance(raw, bytes) else raw.strip()
        if not text:
            continue
        if text.startswith("88,"):
            if pending is None:
                raise StatementParseError(FMT, f"line {number}", "an 88 continuation without a record before it")
            start, body = pending
            body = body.removesuffix("/")
            joiner = " " if body.startswith("16,") else ("" if body.endswith(",") else ",")
            pending = (start, body + joiner + text[3:])
            continue
        if pending is not None:
            yield _split(*pending)
        pending = (number, text)
    if pending is not None:
        yield _split(*pending)


def _split(number: int, body: str) -> tuple[int, list[str]]:
    return number, body.rstrip().removesuffix("/").split(",")


def _minor(text: str, currency: str, where: str, *, signed: bool = False) -> Decimal:
    raw = text.strip()
    if not raw:
        return Decimal(0)
    digits = raw[1:] if signed and raw[0] in "+-" else raw
    if not digits.isdigit() or not digits.isascii():
        raise StatementParseError(FMT, where, f"amount {text!r} is not a whole number of minor units")
    value = Decimal(int(digits)).scaleb(-minor_units(currency))
    return -value if raw.startswith("-") else value


class _Reader:
    def __init__(self):
        self.position = 0
        self.group_currency = "USD"
        self.group_date = None
        self.statement: Statement | None = None
        self.control = Decimal(0)

    def record(self, number: int, fields: list[str]) -> Iterator[Line | Statement]:
        code, where = fields[0], f"line {number}"
        if code == "02":
            self.group_currency = (fields[6].strip() if len(fields) > 6 and fields[6].strip() else "USD").upper()
            self.group_date = short_date(FMT, where, fields[4].strip()) if len(fields) > 4 and fields[4] else None
        elif code == "03":
            self.account(fields, where)
        elif code == "16":
            if self.statement is None:
                raise StatementParseError(FMT, where, "a 16 detail outside an account (no 03 record)")
            line = self.detail(fields, where)
            if line is not None:
                yield line
        elif code == "49":
            yield from self.close(fields, where)
        elif code not in ("01", "98", "99"):
            raise StatementParseError(FMT, where, f"unknown record type {code!r}")

    def account(self, fields: list[str], where: str) -> None:
        if len(fields) < 2 or not fields[1].strip():
            raise StatementParseError(FMT, where, "an 03 record without an account number")
        currency = (fields[2].strip() if len(fields) > 2 and fields[2].strip() else self.group_currency).upper()
        s = Statement(
            statement_id=f"{fields[1].strip()}:{self.group_date or ''}",
            account=fields[1].strip(),
            currency=currency,
            opening_date=self.group_date,
            closing_date=self.group_date,
        )
        self.statement, self.control = s, Decimal(0)
        summary = fields[3:]
        i = 0
        while i + 1 < len(summary):  # type code, amount, item count, funds type (+ its extra fields)
            type_code, amount = summary[i].strip(), _minor(summary[i + 1], currency, where, signed=True)
            self.control += amount
            if type_code == OPENING_LEDGER:
                s.opening_balance = amount
            elif type_code == CLOSING_LEDGER:
                s.closing_balance = amount
            funds = summary[i + 3].strip() if i + 3 < len(summary) else ""
            i += 4 + _funds_extra(funds, summary[i + 4 :])

    def detail(self, fields: list[str], where: str) -> Line | None:
        if len(fields) < 3 or not fields[1].strip().isdigit():
            raise StatementParseError(FMT, where, "a 16 record without a type code")
        type_code = int(fields[1])
        s = self.statement
        amount = _minor(fields[2], s.currency, where)
        self.control += amount
        funds = fields[3].strip() if len(fields) > 3 else ""
        extra = _funds_extra(funds, fields[4:])
        value_date = short_date(FMT, where, fields[4].strip()) if funds == "V" and len(fields) > 4 else None
        refs = fields[4 + extra :]
        bank_ref = refs[0].strip() if refs else ""
        customer_ref = refs[1].strip() if len(refs) > 1 else ""
        text = ",".join(refs[2:])  # free text: may hold commas
        if not 100 <= type_code <= 699:
            return None
        self.position += 1
        line = Line(
            position=self.position,
            amount=amount,
            direction=IN if type_code < 400 else OUT,
            currency=s.currency,
            booking_date=self.group_date,
            value_date=value_date,
            bank_reference=bank_ref,
            structured_reference=customer_ref,
            remittance_info=clean(text),
            bank_transaction_code=f"{type_code:03d}",
            statement_id=s.statement_id,
        )
        s.add(line)
        return line

    def close(self, fields: list[str], where: str) -> Iterator[Statement]:
        if self.statement is None:
            raise StatementParseError(FMT, where, "a 49 trailer without an account")
        total = _minor(fields[1], self.statement.currency, where, signed=True) if len(fields) > 1 else None
        if total is not None and total != self.control:
            raise StatementParseError(
                FMT, where, f"account control total {total} is not the sum of the account's amounts ({self.control})"
            )
        yield self.statement
        self.statement = None


def _funds_extra(funds: str, rest: list[str]) -> int:
    """How many fields follow a funds type code: V value date and time, S three amounts, D a count and pairs."""
    if funds == "V":
        return 2
    if funds == "S":
        return 3
    if funds == "D":
        count = rest[0].strip() if rest else ""
        return 1 + 2 * int(count) if count.isdigit() else 1
    return 0


def parse(stream) -> Iterator[Line | Statement]:
    """Lines of every account in the file, each account's `Statement` after its lines."""
    reader = _Reader()
    seen = False
    for number, fields in _records(stream):
        if not seen:
            if fields[0] != "01":
                raise StatementParseError(FMT, f"line {number}", "the file does not start with an 01 header")
            seen = True
        yield from reader.record(number, fields)
    if not seen:
        raise StatementParseError(FMT, "line 1", "the file is empty")
    if reader.statement is not None:
        raise StatementParseError(FMT, "end of file", "an account has no 49 trailer (the file is cut short)")
