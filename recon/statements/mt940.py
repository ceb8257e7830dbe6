"""SWIFT MT940 customer statements and MT942 interim transaction reports.

Read line by line (bounded memory): fields start with `:tag:` at the start of a line and run to the next one;
`:61:` is a statement line, the `:86:` after it its information (German-style `?20`-`?29` sub-fields and SEPA
keywords `EREF+`, `SVWZ+`, ... are read; other text is kept whole), `:60F:`/`:60M:` and `:62F:`/`:62M:` the
balances, `:28C:` the statement and sequence number, `:34F:` an MT942's currency."""

import datetime as dt
import re
from collections.abc import Iterator

from recon.statements.base import IN, OUT, Line, Statement, StatementParseError, clean, decimal_amount, short_date

FMT = "mt940"
FIELD = re.compile(r"^:(\d\d[A-Z]?):(.*)$")
LINE_61 = re.compile(
    r"^(?P<value>\d{6})(?P<booking>\d{4})?(?P<mark>RC|RD|EC|ED|C|D)(?P<funds>[A-Z])?(?P<amount>\d[\d]*,\d*)"
    r"(?P<type>[A-Z][A-Z0-9]{3})(?P<customer>.*?)(?://(?P<bank>.*))?$"
)
BALANCE = re.compile(r"^(?P<mark>[CD])(?P<date>\d{6})(?P<currency>[A-Z]{3})(?P<amount>\d[\d]*,\d*)$")
DIRECTIONS = {"C": IN, "RD": IN, "EC": IN, "D": OUT, "RC": OUT, "ED": OUT}
SUBFIELD = re.compile(r"\?(\d\d)")
REMITTANCE = frozenset(f"{n}" for n in [*range(20, 30), *range(60, 64)])  # ?20-?29, ?60-?63
SEPA = re.compile(r"(EREF|KREF|MREF|CRED|DEBT|SVWZ|ABWA|ABWE|IBAN|BIC)\+")


def _booking_date(value: dt.date, mmdd: str, where: str) -> dt.date:
    """The entry date (MMDD) in the year nearest the value date."""
    try:
        candidates = [dt.date(value.year + d, int(mmdd[:2]), int(mmdd[2:])) for d in (-1, 0, 1)]
    except ValueError:
        raise StatementParseError(FMT, where, f"entry date {mmdd!r} is not a MMDD date") from None
    return min(candidates, key=lambda d: abs((d - value).days))


def _information(text: str) -> dict:
    """The `:86:` field's parts: structured (`?nn` sub-fields) when it has them, else free text."""
    joined = text.replace("\n", "")
    if not SUBFIELD.search(joined):
        return {"remittance_info": clean(text.replace("\n", " "))}
    pieces = SUBFIELD.split(joined)
    code = pieces[0].strip()
    pairs = list(zip(pieces[1::2], pieces[2::2]))
    remittance = "".join(v for k, v in pairs if k in REMITTANCE)
    name = "".join(v for k, v in pairs if k in ("32", "33"))
    account = "".join(v for k, v in pairs if k == "31")
    text = "".join(v for k, v in pairs if k == "00")
    out = {
        "counterparty_name": clean(name),
        "counterparty_account": clean(account),
        "bank_transaction_code": f"{code}/{clean(text)}" if code and text.strip() else code or clean(text),
    }
    keyed = SEPA.split(remittance)
    if len(keyed) > 1:
        fields = dict(zip(keyed[1::2], (clean(v) for v in keyed[2::2])))
        out["end_to_end_id"] = "" if fields.get("EREF", "").upper() == "NOTPROVIDED" else fields.get("EREF", "")
        out["remittance_info"] = fields.get("SVWZ") or clean(remittance)
    else:
        out["remittance_info"] = clean(remittance)
    return out


class _Reader:
    def __init__(self):
        self.position = 0
        self.statement: Statement | None = None
        self.line: Line | None = None
        self.reference = ""
        self.field_line = 0

    def where(self) -> str:
        return f"line {self.field_line}"

    def field(self, tag: str, value: str) -> Iterator[Line | Statement]:
        if tag == "20":
            yield from self.end_line()
            yield from self.end_statement()
            self.reference = clean(value)
            self.statement = Statement(statement_id=self.reference)
            return
        if self.statement is None:
            raise StatementParseError(FMT, self.where(), f":{tag}: before the statement's :20:")
        s = self.statement
        if tag != "86":
            yield from self.end_line()
        if tag == "25":
            s.account = clean(value)
        elif tag == "28C":
            s.sequence = clean(value)
            s.statement_id = f"{self.reference}/{s.sequence}" if self.reference else s.sequence
        elif tag in ("60F", "60M", "62F", "62M"):
            self.balance(tag, value)
        elif tag == "34F":
            s.currency = s.currency or value.strip()[:3]
        elif tag == "61":
            self.line = self.statement_line(value)
        elif tag == "86" and self.line is not None:
            for key, text in _information(value).items():
                if text:
                    setattr(self.line, key, text)
            yield from self.end_line()

    def balance(self, tag: str, value: str) -> None:
        m = BALANCE.match(value.strip())
        if not m:
            raise StatementParseError(FMT, self.where(), f":{tag}: {value.strip()!r} is not a balance")
        amount = decimal_amount(FMT, self.where(), m["amount"], comma=True)
        signed, date = (amount if m["mark"] == "C" else -amount), short_date(FMT, self.where(), m["date"])
        s = self.statement
        s.currency = s.currency or m["currency"]
        if tag.startswith("60"):
            s.opening_balance, s.opening_date = signed, date
        else:
            s.closing_balance, s.closing_date = signed, date

    def statement_line(self, value: str) -> Line:
        first, _, rest = value.partition("\n")
        m = LINE_61.match(first.strip())
        if not m:
            raise StatementParseError(FMT, self.where(), f":61: {first.strip()!r} is not a statement line")
        if not self.statement.currency:
            raise StatementParseError(FMT, self.where(), ":61: before a balance or :34F: that names the currency")
        value_date = short_date(FMT, self.where(), m["value"])
        booking = _booking_date(value_date, m["booking"], self.where()) if m["booking"] else None
        self.position += 1
        customer = m["customer"].strip()
        return Line(
            position=self.position,
            amount=decimal_amount(FMT, self.where(), m["amount"], comma=True),
            direction=DIRECTIONS[m["mark"]],
            currency=self.statement.currency,
            value_date=value_date,
            booking_date=booking,
            reversal=m["mark"] in ("RC", "RD"),
            bank_reference=clean(m["bank"]) or ("" if customer == "NONREF" else customer),
            supplementary_details=clean(rest),
            bank_transaction_code=m["type"],
            statement_id=self.statement.statement_id,
        )

    def end_line(self) -> Iterator[Line]:
        if self.line is not None:
            self.statement.add(self.line)
            yield self.line
            self.line = None

    def end_statement(self) -> Iterator[Statement]:
        if self.statement is not None:
            yield self.statement
            self.statement = None


def parse(stream) -> Iterator[Line | Statement]:
    """Lines of every MT940/MT942 message in the file, each statement's `Statement` after them. `stream` is
    binary; text is read as UTF-8, falling back to Latin-1 per line (SWIFT's character set is a subset)."""
    reader = _Reader()
    tag, value, seen = None, [], False
    for number, raw in enumerate(stream, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        text = text.rstrip("\r\n")
        stripped = text.strip()
        if stripped.startswith("{") or stripped in ("-", "-}", "}"):
            stripped = stripped.split("{4:", 1)[-1] if "{4:" in stripped else ""
            if not stripped:
                continue
            text = stripped
        m = FIELD.match(text)
        if m:
            if tag is not None:
                yield from reader.field(tag, "\n".join(value))
            tag, value, seen = m[1], [m[2]], True
            reader.field_line = number
        elif tag is not None:
            value.append(text)
        elif stripped:
            raise StatementParseError(FMT, f"line {number}", "text before the first field")
    if tag is not None:
        yield from reader.field(tag, "\n".join(value))
    yield from reader.end_line()
    yield from reader.end_statement()
    if not seen:
        raise StatementParseError(FMT, "line 1", "no SWIFT fields in the file")
