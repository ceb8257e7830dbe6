"""ISO 20022 camt.053 statements, camt.052 reports and camt.054 notifications, versions .001.02 to .001.08.

Streams with a DTD-refusing `iterparse` (defusedxml) and drops each entry once read, so memory stays flat
whatever the file's size. Elements are matched by local name, so every version's namespace reads alike."""

from collections.abc import Iterator
from decimal import Decimal
from xml.etree.ElementTree import ParseError

from defusedxml.ElementTree import iterparse

from recon.statements.base import IN, OUT, Line, Statement, StatementParseError, clean, decimal_amount, iso_date

FMT = "camt053"
CONTAINERS = {"Stmt", "Rpt", "Ntfctn"}
DIRECTIONS = {"CRDT": IN, "DBIT": OUT}
OPENING, CLOSING = {"OPBD", "PRCD"}, {"CLBD"}


def _name(element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def _child(element, name: str):
    if element is None:
        return None
    for child in element:
        if _name(child) == name:
            return child
    return None


def _path(element, path: str):
    for name in path.split("/"):
        element = _child(element, name)
    return element


def _text(element, path: str) -> str:
    found = _path(element, path)
    return (found.text or "").strip() if found is not None else ""


def _children(element, name: str) -> list:
    return [] if element is None else [c for c in element if _name(c) == name]


def _date(element, path: str, where: str):
    holder = _path(element, path)
    text = _text(holder, "Dt") or _text(holder, "DtTm")
    return iso_date(FMT, where, text) if text else None


def _money(element, where: str) -> tuple[Decimal, str]:
    if element is None:
        raise StatementParseError(FMT, where, "no Amt")
    currency = (element.get("Ccy") or "").strip().upper()
    if not currency:
        raise StatementParseError(FMT, where, "Amt has no Ccy")
    return decimal_amount(FMT, where, element.text or ""), currency


def _direction(text: str, where: str) -> str:
    try:
        return DIRECTIONS[text]
    except KeyError:
        raise StatementParseError(FMT, where, f"CdtDbtInd {text!r} is neither CRDT nor DBIT") from None


def _party(detail, direction: str) -> tuple[str, str]:
    """The other side: the debtor of money coming in, the creditor of money going out."""
    role = "Dbtr" if direction == IN else "Cdtr"
    parties = _child(detail, "RltdPties")
    party = _child(parties, role)
    name = _text(party, "Nm") or _text(party, "Pty/Nm")
    account = _path(parties, f"{role}Acct/Id")
    return clean(name), _text(account, "IBAN") or _text(account, "Othr/Id")


def _remittance(detail) -> tuple[str, str]:
    info = _child(detail, "RmtInf")
    text = " ".join(clean(u.text) for u in _children(info, "Ustrd") if clean(u.text))
    structured = " ".join(r for r in (_text(s, "CdtrRefInf/Ref") for s in _children(info, "Strd")) if r)
    return text, structured


def _bank_code(entry) -> str:
    code = _child(entry, "BkTxCd")
    domain = _child(code, "Domn")
    if domain is not None:
        parts = [_text(domain, "Cd"), _text(domain, "Fmly/Cd"), _text(domain, "Fmly/SubFmlyCd")]
        return "/".join(p for p in parts if p)
    return _text(code, "Prtry/Cd")


class _Reader:
    """Turns the entries of one file into lines, counting positions across statements."""

    def __init__(self):
        self.position = 0
        self.statement: Statement | None = None
        self.entries = 0

    def statement_field(self, element) -> None:
        s, name = self.statement, _name(element)
        if name == "Id":
            s.statement_id = clean(element.text)
        elif name in ("LglSeqNb", "ElctrncSeqNb") and not (name == "ElctrncSeqNb" and s.sequence):
            s.sequence = clean(element.text)
        elif name == "Acct":
            s.account = _text(element, "Id/IBAN") or _text(element, "Id/Othr/Id")
            s.currency = _text(element, "Ccy").upper()
        elif name == "Bal":
            self.balance(element)

    def balance(self, element) -> None:
        where = f"balance of statement {self.statement.statement_id or '?'}"
        code = _text(element, "Tp/CdOrPrtry/Cd")
        if code not in OPENING | CLOSING:
            return
        amount, currency = _money(_child(element, "Amt"), where)
        signed = amount if _text(element, "CdtDbtInd") != "DBIT" else -amount
        self.statement.currency = self.statement.currency or currency
        if code in OPENING:
            self.statement.opening_balance, self.statement.opening_date = signed, _date(element, "Dt", where)
        else:
            self.statement.closing_balance, self.statement.closing_date = signed, _date(element, "Dt", where)

    def entry(self, entry) -> Iterator[Line]:
        self.entries += 1
        s = self.statement
        where = f"entry {self.entries} of statement {s.statement_id or '?'}"
        status = _child(entry, "Sts")
        code = (status.text or "").strip() if status is not None else ""
        code = code or _text(status, "Cd")
        if code and code != "BOOK":
            return  # pending or information only: not an entry (API.md)
        amount, currency = _money(_child(entry, "Amt"), where)
        direction = _direction(_text(entry, "CdtDbtInd"), where)
        common = dict(booking_date=_date(entry, "BookgDt", where), value_date=_date(entry, "ValDt", where),
                      reversal=_text(entry, "RvslInd").lower() in ("true", "1"), bank_transaction_code=_bank_code(entry),
                      statement_id=s.statement_id)
        groups = _children(entry, "NtryDtls")
        details = [d for g in groups for d in _children(g, "TxDtls")]
        amounts = [_path(d, "AmtDtls/TxAmt/Amt") if _path(d, "AmtDtls/TxAmt/Amt") is not None else _child(d, "Amt")
                   for d in details]
        entry_ref = _text(entry, "AcctSvcrRef")
        if len(details) > 1 and all(a is not None for a in amounts):
            batch = next((b for b in (_child(g, "Btch") for g in groups) if b is not None), None)
            reference = (_text(batch, "PmtInfId") or _text(batch, "MsgId") or entry_ref or _text(entry, "NtryRef")
                         or f"{s.statement_id}:{self.entries}")
            for i, (detail, amount_el) in enumerate(zip(details, amounts), 1):
                d_where = f"{where}, detail {i}"
                d_amount, d_currency = _money(amount_el, d_where)
                own = _text(detail, "CdtDbtInd")
                d_direction = _direction(own, d_where) if own else direction
                yield self.line(detail, d_amount, d_direction, d_currency, common,
                                bank_reference=_text(detail, "Refs/AcctSvcrRef") or entry_ref, batch_reference=reference)
            return
        detail = details[0] if len(details) == 1 else None
        line = self.line(detail, amount, direction, currency, common, bank_reference=entry_ref)
        if len(details) > 1:  # details without amounts: their texts belong to the one line
            line.remittance_info = " ".join(t for t in (_remittance(d)[0] for d in details) if t)
        if not line.remittance_info:
            line.remittance_info = clean(_text(entry, "AddtlNtryInf"))
        yield line

    def line(self, detail, amount, direction, currency, common, **refs) -> Line:
        self.position += 1
        text, structured = _remittance(detail)
        name, account = _party(detail, direction)
        end_to_end = _text(detail, "Refs/EndToEndId")
        line = Line(position=self.position, amount=amount, direction=direction, currency=currency,
                    remittance_info=text, structured_reference=structured, counterparty_name=name,
                    counterparty_account=account,
                    end_to_end_id="" if end_to_end.upper() == "NOTPROVIDED" else end_to_end, **common, **refs)
        self.statement.add(line)
        return line


def parse(stream) -> Iterator[Line | Statement]:
    """Lines of every statement (report, notification) in the file, each statement's `Statement` after them."""
    reader = _Reader()
    stack: list = []
    root_seen = False
    try:
        for event, element in iterparse(stream, events=("start", "end")):
            if event == "start":
                if not root_seen:
                    root_seen = True
                    if _name(element) != "Document" or "camt.05" not in element.tag:
                        raise StatementParseError(FMT, "root element", f"<{_name(element)}> is not a camt document")
                stack.append(element)
                if _name(element) in CONTAINERS and len(stack) == 3:
                    reader.statement, reader.entries = Statement(statement_id=""), 0
                continue
            stack.pop()
            depth, name = len(stack), _name(element)
            if depth == 3 and reader.statement is not None:
                if name == "Ntry":
                    yield from reader.entry(element)
                    stack[-1].remove(element)
                else:
                    reader.statement_field(element)
            elif depth == 2 and name in CONTAINERS:
                yield reader.statement
                reader.statement = None
                stack[-1].remove(element)
    except ParseError as e:
        line, column = getattr(e, "position", (0, 0))
        raise StatementParseError(FMT, f"line {line}, column {column}", "the XML is not well-formed") from None
    except StatementParseError:
        raise
    except Exception as e:  # defusedxml refuses DTDs and entities
        raise StatementParseError(FMT, "document", f"refused: {type(e).__name__}") from None
    if not root_seen:
        raise StatementParseError(FMT, "line 1", "the file is empty")
