"""OFX bank and credit-card statements: 1.x SGML (tags left unclosed) and 2.x XML, QFX alike.

A small tokenizer of our own (ofxtools is GPLv3, ofxparse unmaintained since 2021) reads `<TAG>value` pairs in
chunks (bounded memory): a value runs to the next `<`, so closed and unclosed leaf tags read the same."""

import datetime as dt
import html
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

from recon.statements.base import IN, OUT, Line, Statement, StatementParseError, clean

FMT = "ofx"
TOKEN = re.compile(r"<(/?)([A-Za-z0-9._]+)(?:\s[^>]*)?>([^<]*)")
STATEMENTS = {"STMTRS", "CCSTMTRS"}
CHUNK = 1 << 16


def _tokens(stream) -> Iterator[tuple[bool, str, str]]:
    """(closing, TAG, text) for each tag in the body, read `CHUNK` bytes at a time."""
    buffer = ""
    while True:
        chunk = stream.read(CHUNK)
        if isinstance(chunk, bytes):
            chunk = chunk.decode("utf-8", errors="replace")
        buffer += chunk
        cut = buffer.rfind("<") if chunk else len(buffer)
        if cut <= 0 and chunk:
            continue
        for m in TOKEN.finditer(buffer, 0, cut):
            if not m[2].startswith(("?", "!")):
                yield m[1] == "/", m[2].upper(), html.unescape(m[3]).strip()
        buffer = buffer[cut:]
        if not chunk:
            return


def _date(value: str, where: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date(int(value[0:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        raise StatementParseError(FMT, where, f"date {value!r} is not an OFX date") from None


def _amount(value: str, where: str) -> Decimal:
    text = value.strip().replace(",", ".") if "." not in value else value.strip()
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise StatementParseError(FMT, where, f"amount {value!r} is not a number") from None
    if not amount.is_finite():
        raise StatementParseError(FMT, where, f"amount {value!r} is not a number")
    return amount


class _Reader:
    def __init__(self):
        self.position = 0
        self.statement: Statement | None = None
        self.fields: dict[str, str] = {}
        self.path: list[str] = []
        self.transactions = 0

    def open(self, tag: str) -> None:
        self.path.append(tag)
        if tag in STATEMENTS:
            self.statement = Statement(statement_id="")
        elif tag == "STMTTRN":
            self.fields = {}
            self.transactions += 1

    def value(self, tag: str, text: str) -> None:
        parent = self.path[-1] if self.path else ""
        s = self.statement
        if parent == "STMTTRN" or (len(self.path) > 1 and self.path[-2] == "STMTTRN"):
            key = tag if parent == "STMTTRN" else f"{parent}.{tag}"
            self.fields.setdefault(key, text)
        elif s is None:
            return
        elif tag == "CURDEF":
            s.currency = text.upper()
        elif tag == "ACCTID" and parent in ("BANKACCTFROM", "CCACCTFROM"):
            s.account = text
        elif parent == "BANKTRANLIST" and tag in ("DTSTART", "DTEND"):
            setattr(s, "opening_date" if tag == "DTSTART" else "closing_date", _date(text, tag))
        elif parent == "LEDGERBAL" and tag == "BALAMT":
            s.closing_balance = _amount(text, "LEDGERBAL")

    def close(self, tag: str) -> Iterator[Line | Statement]:
        if tag not in self.path:  # a closed leaf (XML), or a stray closing tag
            return
        while self.path[-1] != tag:  # SGML: leaf tags are never closed
            self.path.pop()
        self.path.pop()
        if tag == "STMTTRN":
            yield self.line()
        elif tag in STATEMENTS and self.statement is not None:
            self.statement.statement_id = self.statement_id()
            yield self.statement
            self.statement = None

    def statement_id(self) -> str:
        s = self.statement
        return f"{s.account}:{s.closing_date.isoformat() if s.closing_date else ''}"

    def line(self) -> Line:
        f, s = self.fields, self.statement
        where = f"STMTTRN {self.transactions}"
        if s is None:
            raise StatementParseError(FMT, where, "a transaction outside a statement")
        if "TRNAMT" not in f:
            raise StatementParseError(FMT, where, "no TRNAMT")
        amount = _amount(f["TRNAMT"], where)
        currency = (f.get("CURRENCY.CURSYM") or f.get("ORIGCURRENCY.CURSYM") or s.currency).upper()
        if not currency:
            raise StatementParseError(FMT, where, "no currency (CURDEF)")
        self.position += 1
        line = Line(
            position=self.position,
            amount=abs(amount),
            direction=IN if amount > 0 else OUT,
            currency=currency,
            booking_date=_date(f.get("DTPOSTED", ""), where),
            value_date=_date(f.get("DTAVAIL", ""), where),
            bank_reference=f.get("FITID", ""),
            remittance_info=clean(f.get("MEMO", "")),
            counterparty_name=clean(f.get("NAME") or f.get("PAYEE.NAME", "")),
            counterparty_account=f.get("BANKACCTTO.ACCTID", ""),
            bank_transaction_code=f.get("TRNTYPE", ""),
            structured_reference=f.get("REFNUM", "") or f.get("CHECKNUM", ""),
            statement_id=self.statement_id(),
        )
        s.add(line)
        return line


def parse(stream) -> Iterator[Line | Statement]:
    """Lines of every statement in the file (positive TRNAMT in, negative out), each `Statement` after them.
    OFX has no opening balance; LEDGERBAL is the closing one."""
    reader = _Reader()
    seen = False
    for closing, tag, text in _tokens(stream):
        if tag == "OFX":
            seen = True
        if closing:
            yield from reader.close(tag)
        elif text:
            reader.value(tag, text)
        else:
            reader.open(tag)
    if not seen:
        raise StatementParseError(FMT, "document", "no <OFX> element")
    if reader.statement is not None:
        raise StatementParseError(FMT, "end of file", "a statement is not closed (the file is cut short)")
