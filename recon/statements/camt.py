"""ISO 20022 camt.053 statements, camt.052 reports and camt.054 notifications, versions .001.02 to .001.08.

Streams with the C ElementTree's `iterparse` and drops each entry once read, so memory stays flat whatever the
file's size. A file that declares a DOCTYPE or entities is refused before parsing (camt has none; expat >= 2.4.1
also caps entity amplification). Each entry is read in one walk into a map of local-name paths, so every
version's namespace reads alike."""

import io
from collections.abc import Iterator
from decimal import Decimal
from xml.etree.ElementTree import ParseError, iterparse

from recon.statements.base import IN, OUT, Line, Statement, StatementParseError, clean, decimal_amount, iso_date

FMT = "camt053"
CONTAINERS = {"Stmt", "Rpt", "Ntfctn"}
DIRECTIONS = {"CRDT": IN, "DBIT": OUT}
OPENING, CLOSING = {"OPBD", "PRCD"}, {"CLBD"}


def _name(element) -> str:
    tag = element.tag
    return tag[tag.rfind("}") + 1:]


def _flat(element, stop: frozenset = frozenset()) -> dict[str, list]:
    """Every descendant of `element` by its path of local names ("RltdPties/Dbtr/Nm": [elements]), one walk;
    the subtrees of children named in `stop` are not entered (they are read on their own)."""
    out: dict[str, list] = {}

    def walk(node, prefix: str) -> None:
        for child in node:
            tag = child.tag
            if not isinstance(tag, str):  # comments, processing instructions
                continue
            path = prefix + tag[tag.rfind("}") + 1:]
            out.setdefault(path, []).append(child)
            if path not in stop:
                walk(child, path + "/")

    walk(element, "")
    return out


def _text(flat: dict, path: str) -> str:
    found = flat.get(path)
    return (found[0].text or "").strip() if found else ""


def _texts(flat: dict, path: str) -> list[str]:
    return [t for t in (clean(e.text) for e in flat.get(path, ())) if t]


def _date(flat: dict, path: str, where: str):
    text = _text(flat, path + "/Dt") or _text(flat, path + "/DtTm")
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


def _details(flat: dict, direction: str) -> dict:
    """The texts a transaction detail carries: references, the other side (the debtor of money coming in, the
    creditor of money going out), remittance information."""
    role = "Dbtr" if direction == IN else "Cdtr"
    end_to_end = _text(flat, "Refs/EndToEndId")
    return {"end_to_end_id": "" if end_to_end.upper() == "NOTPROVIDED" else end_to_end,
            "counterparty_name": clean(_text(flat, f"RltdPties/{role}/Nm") or _text(flat, f"RltdPties/{role}/Pty/Nm")),
            "counterparty_account": (_text(flat, f"RltdPties/{role}Acct/Id/IBAN")
                                     or _text(flat, f"RltdPties/{role}Acct/Id/Othr/Id")),
            "remittance_info": " ".join(_texts(flat, "RmtInf/Ustrd")),
            "structured_reference": " ".join(_texts(flat, "RmtInf/Strd/CdtrRefInf/Ref"))}


def _bank_code(flat: dict) -> str:
    if "BkTxCd/Domn" in flat:
        parts = [_text(flat, "BkTxCd/Domn/Cd"), _text(flat, "BkTxCd/Domn/Fmly/Cd"),
                 _text(flat, "BkTxCd/Domn/Fmly/SubFmlyCd")]
        return "/".join(p for p in parts if p)
    return _text(flat, "BkTxCd/Prtry/Cd")


def _amount_element(flat: dict):
    found = flat.get("AmtDtls/TxAmt/Amt") or flat.get("Amt")
    return found[0] if found else None


class _Reader:
    """Turns the entries of one file into lines, counting positions across statements (`check_only`: the
    lines' texts are left out)."""

    def __init__(self, check_only: bool = False):
        self.check_only = check_only
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
            flat = _flat(element)
            s.account = _text(flat, "Id/IBAN") or _text(flat, "Id/Othr/Id")
            s.currency = _text(flat, "Ccy").upper()
        elif name == "Bal":
            self.balance(_flat(element))

    def balance(self, flat: dict) -> None:
        where = f"balance of statement {self.statement.statement_id or '?'}"
        code = _text(flat, "Tp/CdOrPrtry/Cd")
        if code not in OPENING | CLOSING:
            return
        amount, currency = _money((flat.get("Amt") or [None])[0], where)
        signed = amount if _text(flat, "CdtDbtInd") != "DBIT" else -amount
        self.statement.currency = self.statement.currency or currency
        if code in OPENING:
            self.statement.opening_balance, self.statement.opening_date = signed, _date(flat, "Dt", where)
        else:
            self.statement.closing_balance, self.statement.closing_date = signed, _date(flat, "Dt", where)

    def entry(self, entry) -> Iterator[Line]:
        self.entries += 1
        s = self.statement
        where = f"entry {self.entries} of statement {s.statement_id or '?'}"
        flat = _flat(entry, stop=frozenset({"NtryDtls"}))
        code = _text(flat, "Sts") or _text(flat, "Sts/Cd")
        if code and code != "BOOK":
            return  # pending or information only: not an entry (API.md)
        amount, currency = _money((flat.get("Amt") or [None])[0], where)
        direction = _direction(_text(flat, "CdtDbtInd"), where)
        common = dict(booking_date=_date(flat, "BookgDt", where), value_date=_date(flat, "ValDt", where),
                      reversal=_text(flat, "RvslInd").lower() in ("true", "1"), statement_id=s.statement_id,
                      bank_transaction_code="" if self.check_only else _bank_code(flat))
        check = self.check_only
        raw_details = [d for g in flat.get("NtryDtls", ()) for d in g if _name(d) == "TxDtls"]
        if check and len(raw_details) < 2:  # one line whatever its detail says: nothing there can fail
            raw_details = []
        details = [_flat(d) for d in raw_details]
        amounts = [_amount_element(d) for d in details]
        entry_ref = _text(flat, "AcctSvcrRef")
        if len(details) > 1 and all(a is not None for a in amounts):
            batch = next((b for b in (_flat(g) for g in flat.get("NtryDtls", ())) if "Btch" in b), {})
            reference = (_text(batch, "Btch/PmtInfId") or _text(batch, "Btch/MsgId") or entry_ref
                         or _text(flat, "NtryRef") or f"{s.statement_id}:{self.entries}")
            for i, (detail, amount_el) in enumerate(zip(details, amounts), 1):
                d_where = f"{where}, detail {i}"
                d_amount, d_currency = _money(amount_el, d_where)
                own = _text(detail, "CdtDbtInd")
                d_direction = _direction(own, d_where) if own else direction
                yield self.line({} if check else _details(detail, d_direction), d_amount, d_direction, d_currency,
                                common,
                                bank_reference=_text(detail, "Refs/AcctSvcrRef") or entry_ref,
                                batch_reference=reference)
            return
        texts = _details(details[0], direction) if len(details) == 1 and not check else {}
        if len(details) > 1 and not check:  # details without amounts: their texts belong to the one line
            texts["remittance_info"] = " ".join(t for t in (" ".join(_texts(d, "RmtInf/Ustrd")) for d in details) if t)
        if not texts.get("remittance_info") and not check:
            texts["remittance_info"] = clean(_text(flat, "AddtlNtryInf"))
        yield self.line(texts, amount, direction, currency, common, bank_reference=entry_ref)

    def line(self, texts: dict, amount, direction, currency, common, **refs) -> Line:
        self.position += 1
        line = Line(position=self.position, amount=amount, direction=direction, currency=currency, **texts,
                    **common, **refs)
        self.statement.add(line)
        return line


HEADER_FIELDS = {"Id", "ElctrncSeqNb", "LglSeqNb", "Acct", "Bal"}
PROBE_BYTES = 8192


def _refusing_dtds(stream):
    """The stream from its start, unless its prolog declares a DOCTYPE or an ENTITY."""
    head = stream.read(PROBE_BYTES)
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise StatementParseError(FMT, "document", "refused: a DOCTYPE or ENTITY declaration")
    return io.BufferedReader(_Chain(head, stream))


class _Chain(io.RawIOBase):
    """`head` (already read) followed by the rest of `stream`."""

    def __init__(self, head: bytes, stream):
        self.head, self.stream = head, stream

    def readable(self):
        return True

    def readinto(self, target) -> int:
        if self.head:
            data, self.head = self.head[:len(target)], self.head[len(target):]
        else:
            data = self.stream.read(len(target))
        target[:len(data)] = data
        return len(data)


def parse(stream, *, check_only: bool = False) -> Iterator[Line | Statement]:
    """Lines of every statement (report, notification) in the file, each statement's `Statement` after them."""
    reader = _Reader(check_only)
    stack: list = []
    try:
        for event, element in iterparse(_refusing_dtds(stream), events=("start", "end")):
            if event == "start":
                if not stack and (_name(element) != "Document" or "camt.05" not in element.tag):
                    raise StatementParseError(FMT, "root element", f"<{_name(element)}> is not a camt document")
                stack.append(element)
                if len(stack) == 3 and _name(element) in CONTAINERS:
                    reader.statement, reader.entries = Statement(statement_id=""), 0
                continue
            stack.pop()
            if len(stack) == 3 and reader.statement is not None:  # a child of a statement
                name = _name(element)
                if name == "Ntry":
                    yield from reader.entry(element)
                    stack[-1].remove(element)
                elif name in HEADER_FIELDS:
                    reader.statement_field(element)
            elif len(stack) == 2 and reader.statement is not None and _name(element) in CONTAINERS:
                yield reader.statement
                reader.statement = None
                stack[-1].remove(element)
    except ParseError as e:
        line, column = getattr(e, "position", (0, 0))
        raise StatementParseError(FMT, f"line {line}, column {column}", "the XML is not well-formed") from None
