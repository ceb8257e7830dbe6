"""What every statement parser produces."""

import dataclasses
import datetime as dt
import operator
from decimal import Decimal, InvalidOperation

IN, OUT = "IN", "OUT"


class StatementParseError(ValueError):
    """A statement file that is recognised but cannot be read: `format` and `where` say which and where."""

    def __init__(self, fmt: str, where: str, problem: str):
        self.format, self.where, self.problem = fmt, where, problem
        super().__init__(f"{fmt}: {problem} ({where})")


@dataclasses.dataclass(slots=True)
class Line:
    """One booked statement line (or one amount-carrying detail of a batch booking). `amount` is absolute;
    `direction` is IN (money into the account) or OUT; `position` counts lines in file order from 1."""

    position: int
    amount: Decimal
    direction: str
    currency: str
    booking_date: dt.date | None = None
    value_date: dt.date | None = None
    reversal: bool = False
    bank_reference: str = ""
    end_to_end_id: str = ""
    remittance_info: str = ""
    structured_reference: str = ""
    counterparty_name: str = ""
    counterparty_account: str = ""
    supplementary_details: str = ""
    bank_transaction_code: str = ""
    statement_id: str = ""
    batch_reference: str = ""

    @property
    def effective_date(self) -> dt.date | None:
        """The value date, else the booking date (API.md)."""
        return self.value_date or self.booking_date

    @property
    def signed_amount(self) -> Decimal:
        return self.amount if self.direction == IN else -self.amount

    def metadata_texts(self) -> list[tuple[str, str]]:
        """The line's metadata texts (for a staging entry): the non-empty text fields, then the dates (ISO)."""
        out = [(name, value) for name, value in zip(TEXT_FIELDS, _text_fields(self)) if value]
        if self.booking_date:
            out.append(("booking_date", self.booking_date.isoformat()))
        if self.value_date:
            out.append(("value_date", self.value_date.isoformat()))
        return out

    def metadata(self) -> dict:
        """The line's fields for a staging entry's metadata: non-empty text, ISO dates, `reversal` always."""
        return {**dict(self.metadata_texts()), "reversal": self.reversal}


TEXT_FIELDS = (
    "bank_reference",
    "end_to_end_id",
    "remittance_info",
    "structured_reference",
    "counterparty_name",
    "counterparty_account",
    "supplementary_details",
    "bank_transaction_code",
    "statement_id",
    "batch_reference",
)
text_fields = _text_fields = operator.attrgetter(*TEXT_FIELDS)  # a line's TEXT_FIELDS, as a tuple


@dataclasses.dataclass(slots=True)
class Statement:
    """A statement's own figures, yielded after its lines: balances are signed (negative = overdrawn for the
    account holder), `line_count` and `lines_total` (signed sum) cover the lines yielded for it."""

    statement_id: str
    account: str = ""
    currency: str = ""
    sequence: str = ""
    opening_balance: Decimal | None = None
    closing_balance: Decimal | None = None
    opening_date: dt.date | None = None
    closing_date: dt.date | None = None
    line_count: int = 0
    lines_total: Decimal = Decimal(0)

    def add(self, line: Line) -> None:
        self.line_count += 1
        self.lines_total += line.signed_amount

    @property
    def balanced(self) -> bool | None:
        """Do the lines add up to closing minus opening? None when the statement lacks either balance."""
        if self.opening_balance is None or self.closing_balance is None:
            return None
        return self.closing_balance - self.opening_balance == self.lines_total


def decimal_amount(fmt: str, where: str, text: str, *, comma: bool = False) -> Decimal:
    """A non-negative decimal amount from a statement field (`comma`: the decimal mark is a comma)."""
    raw = (text or "").strip()
    if comma:
        raw = raw.replace(",", ".")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise StatementParseError(fmt, where, f"amount {text!r} is not a number") from None
    if not value.is_finite() or value < 0 or raw.startswith(("+", "-")) and comma:
        raise StatementParseError(fmt, where, f"amount {text!r} is not a positive number")
    return value


def iso_date(fmt: str, where: str, text: str) -> dt.date:
    """A date from `YYYY-MM-DD` (a date-time's date part is taken)."""
    try:
        return dt.date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise StatementParseError(fmt, where, f"date {text!r} is not a date") from None


def short_date(fmt: str, where: str, text: str) -> dt.date:
    """A date from `YYMMDD` (years 00-69 are 20xx, 70-99 19xx, as SWIFT and BAI2 read them)."""
    try:
        yy, mm, dd = int(text[0:2]), int(text[2:4]), int(text[4:6])
        if len(text) != 6:
            raise ValueError
        return dt.date(2000 + yy if yy < 70 else 1900 + yy, mm, dd)
    except ValueError:
        raise StatementParseError(fmt, where, f"date {text!r} is not a YYMMDD date") from None


def clean(text: str | None) -> str:
    """Whitespace runs (newlines included) as one space, stripped."""
    return " ".join((text or "").split())
