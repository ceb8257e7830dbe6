"""ISO 20022 camt.053 statements, camt.052 reports and camt.054 notifications, versions .001.02 to .001.08.

Streams with the C ElementTree's `iterparse` and drops each entry once read, so memory stays flat whatever the
file's size. A file that declares a DOCTYPE or entities is refused before parsing (camt has none; expat >= 2.4.1
also caps entity amplification). Every element of a camt document is in its root's namespace (one per version),
so the parser reads an entry's fields with `find`/`findall` on namespaced tags built once per file (`_Tags`): a
handful of C lookups per entry instead of a walk of all its descendants."""

import io
from collections.abc import Iterator
from decimal import Decimal
from xml.etree.ElementTree import ParseError, iterparse

from recon.statements.base import IN, OUT, Line, Statement, StatementParseError, clean, decimal_amount, iso_date

FMT = "camt053"
CONTAINERS = ("Stmt", "Rpt", "Ntfctn")
DIRECTIONS = {"CRDT": IN, "DBIT": OUT}
OPENING, CLOSING = {"OPBD", "PRCD"}, {"CLBD"}
HEADER_FIELDS = ("Id", "ElctrncSeqNb", "LglSeqNb", "Acct", "Bal")
# Every local name the parser looks up: `_Tags` makes each an attribute holding its namespaced tag.
NAMES = (
    *CONTAINERS,
    *HEADER_FIELDS,
    "Ntry", "Amt", "CdtDbtInd", "Sts", "Cd", "BookgDt", "ValDt", "Dt", "DtTm", "RvslInd", "AcctSvcrRef", "NtryRef",
    "AddtlNtryInf", "BkTxCd", "Domn", "Fmly", "SubFmlyCd", "Prtry", "NtryDtls", "TxDtls", "Btch", "PmtInfId",
    "MsgId", "AmtDtls", "TxAmt", "Refs", "EndToEndId", "RltdPties", "Dbtr", "Cdtr", "DbtrAcct", "CdtrAcct", "Nm",
    "Pty", "IBAN", "Othr", "RmtInf", "Ustrd", "Strd", "CdtrRefInf", "Ref", "Ccy", "Tp", "CdOrPrtry",
)  # fmt: skip


class _Tags:
    """The namespaced tag of each local name in NAMES (`tags.Amt` == "{urn:...camt.053.001.02}Amt")."""

    def __init__(self, namespace: str):
        for name in NAMES:
            setattr(self, name, namespace + name)
        self.containers = frozenset(namespace + c for c in CONTAINERS)
        self.header = frozenset(namespace + h for h in HEADER_FIELDS)


def _name(element) -> str:
    tag = element.tag
    return tag[tag.rfind("}") + 1 :]


def _first(element, *tags):
    """The first element down the path of `tags` (each the first child of that tag), else None."""
    for tag in tags:
        element = element.find(tag)
        if element is None:
            return None
    return element


def _text(element, *tags) -> str:
    found = _first(element, *tags)
    return (found.text or "").strip() if found is not None else ""


def _texts(element, parent: str, *tags) -> list[str]:
    """The cleaned, non-empty texts of every element down `parent`/`tags` (all matches at each level)."""
    found = element.findall(parent)
    for tag in tags:
        found = [c for e in found for c in e.findall(tag)]
    return [t for t in (clean(e.text) for e in found) if t]


def _date(element, tags: _Tags, where: str):
    """The date of a date choice (`<Dt>` or `<DtTm>`) element, None without one."""
    if element is None:
        return None
    text = _text(element, tags.Dt) or _text(element, tags.DtTm)
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


def _details(detail, t: _Tags, direction: str) -> dict:
    """The texts a transaction detail carries: references, the other side (the debtor of money coming in, the
    creditor of money going out), remittance information. Only non-empty ones."""
    out = {}
    end_to_end = _text(detail, t.Refs, t.EndToEndId)
    if end_to_end and end_to_end.upper() != "NOTPROVIDED":
        out["end_to_end_id"] = end_to_end
    parties = detail.find(t.RltdPties)
    if parties is not None:
        role, role_account = (t.Dbtr, t.DbtrAcct) if direction == IN else (t.Cdtr, t.CdtrAcct)
        if name := clean(_text(parties, role, t.Nm) or _text(parties, role, t.Pty, t.Nm)):
            out["counterparty_name"] = name
        if account := _text(parties, role_account, t.Id, t.IBAN) or _text(parties, role_account, t.Id, t.Othr, t.Id):
            out["counterparty_account"] = account
    if detail.find(t.RmtInf) is not None:
        if remittance := " ".join(_texts(detail, t.RmtInf, t.Ustrd)):
            out["remittance_info"] = remittance
        if structured := " ".join(_texts(detail, t.RmtInf, t.Strd, t.CdtrRefInf, t.Ref)):
            out["structured_reference"] = structured
    return out


def _bank_code(entry, t: _Tags) -> str:
    code = entry.find(t.BkTxCd)
    if code is None:
        return ""
    domain = code.find(t.Domn)
    if domain is not None:
        parts = [_text(domain, t.Cd), _text(domain, t.Fmly, t.Cd), _text(domain, t.Fmly, t.SubFmlyCd)]
        return "/".join(p for p in parts if p)
    return _text(code, t.Prtry, t.Cd)


def _detail_amount(detail, t: _Tags):
    """A transaction detail's amount element: `AmtDtls/TxAmt/Amt`, else its own `Amt`, else None."""
    found = _first(detail, t.AmtDtls, t.TxAmt, t.Amt)
    return found if found is not None else detail.find(t.Amt)


def _flat(element) -> dict[str, list]:
    """Every descendant of `element` by its path of local names ("Id/IBAN": [elements]), one walk (statement
    headers only: they are few)."""
    out: dict[str, list] = {}

    def walk(node, prefix: str) -> None:
        for child in node:
            if not isinstance(child.tag, str):  # comments, processing instructions
                continue
            path = prefix + _name(child)
            out.setdefault(path, []).append(child)
            walk(child, path + "/")

    walk(element, "")
    return out


def _flat_text(flat: dict, path: str) -> str:
    found = flat.get(path)
    return (found[0].text or "").strip() if found else ""


class _Reader:
    """Turns the entries of one file into lines, counting positions across statements."""

    def __init__(self, tags: _Tags):
        self.t = tags
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
            s.account = _flat_text(flat, "Id/IBAN") or _flat_text(flat, "Id/Othr/Id")
            s.currency = _flat_text(flat, "Ccy").upper()
        elif name == "Bal":
            self.balance(_flat(element))

    def balance(self, flat: dict) -> None:
        where = f"balance of statement {self.statement.statement_id or '?'}"
        code = _flat_text(flat, "Tp/CdOrPrtry/Cd")
        if code not in OPENING | CLOSING:
            return
        amount, currency = _money((flat.get("Amt") or [None])[0], where)
        signed = amount if _flat_text(flat, "CdtDbtInd") != "DBIT" else -amount
        day = _flat_text(flat, "Dt/Dt") or _flat_text(flat, "Dt/DtTm")
        date = iso_date(FMT, where, day) if day else None
        self.statement.currency = self.statement.currency or currency
        if code in OPENING:
            self.statement.opening_balance, self.statement.opening_date = signed, date
        else:
            self.statement.closing_balance, self.statement.closing_date = signed, date

    def entry(self, entry) -> Iterator[Line]:
        t = self.t
        self.entries += 1
        s = self.statement
        where = f"entry {self.entries} of statement {s.statement_id or '?'}"
        status = entry.find(t.Sts)
        if status is not None:
            code = (status.text or "").strip() or _text(status, t.Cd)
            if code and code != "BOOK":
                return  # pending or information only: not an entry (API.md)
        amount, currency = _money(entry.find(t.Amt), where)
        direction = _direction(_text(entry, t.CdtDbtInd), where)
        common = dict(
            booking_date=_date(entry.find(t.BookgDt), t, where),
            value_date=_date(entry.find(t.ValDt), t, where),
            reversal=_text(entry, t.RvslInd).lower() in ("true", "1"),
            statement_id=s.statement_id,
            bank_transaction_code=_bank_code(entry, t),
        )
        groups = entry.findall(t.NtryDtls)
        details = [d for g in groups for d in g.findall(t.TxDtls)]
        entry_ref = _text(entry, t.AcctSvcrRef)
        if len(details) > 1:
            amounts = [_detail_amount(d, t) for d in details]
            if all(a is not None for a in amounts):
                yield from self.batch(entry, groups, details, amounts, direction, common, entry_ref, where)
                return
        texts = _details(details[0], t, direction) if len(details) == 1 else {}
        if len(details) > 1:  # details without amounts: their texts belong to the one line
            joined = " ".join(x for x in (" ".join(_texts(d, t.RmtInf, t.Ustrd)) for d in details) if x)
            if joined:
                texts["remittance_info"] = joined
        if not texts.get("remittance_info") and (extra := clean(_text(entry, t.AddtlNtryInf))):
            texts["remittance_info"] = extra
        yield self.line(texts, amount, direction, currency, common, bank_reference=entry_ref)

    def batch(self, entry, groups, details, amounts, direction, common, entry_ref, where) -> Iterator[Line]:
        """One line per transaction detail of a batch booking whose details all carry an amount."""
        t, s = self.t, self.statement
        batch = next((b for b in (g.find(t.Btch) for g in groups) if b is not None), None)
        reference = (
            (_text(batch, t.PmtInfId) or _text(batch, t.MsgId) if batch is not None else "")
            or entry_ref
            or _text(entry, t.NtryRef)
            or f"{s.statement_id}:{self.entries}"
        )
        for i, (detail, amount_el) in enumerate(zip(details, amounts), 1):
            d_where = f"{where}, detail {i}"
            d_amount, d_currency = _money(amount_el, d_where)
            own = _text(detail, t.CdtDbtInd)
            d_direction = _direction(own, d_where) if own else direction
            yield self.line(
                _details(detail, t, d_direction),
                d_amount,
                d_direction,
                d_currency,
                common,
                bank_reference=_text(detail, t.Refs, t.AcctSvcrRef) or entry_ref,
                batch_reference=reference,
            )

    def line(self, texts: dict, amount, direction, currency, common, **refs) -> Line:
        self.position += 1
        line = Line(
            position=self.position, amount=amount, direction=direction, currency=currency, **texts, **common, **refs
        )
        self.statement.add(line)
        return line


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
            data, self.head = self.head[: len(target)], self.head[len(target) :]
        else:
            data = self.stream.read(len(target))
        target[: len(data)] = data
        return len(data)


def parse(stream) -> Iterator[Line | Statement]:
    """Lines of every statement (report, notification) in the file, each statement's `Statement` after them.
    Depth 1 is the `Document`, 2 the message (`BkToCstmrStmt`, ...), 3 its statements, 4 their fields and
    entries; an entry is read when it ends and then dropped from the tree."""
    reader: _Reader | None = None
    depth, message, container = 0, None, None
    try:
        for event, element in iterparse(_refusing_dtds(stream), events=("start", "end")):
            if event == "start":
                depth += 1
                if depth == 1:
                    if _name(element) != "Document" or "camt.05" not in element.tag:
                        raise StatementParseError(FMT, "root element", f"<{_name(element)}> is not a camt document")
                    tag = element.tag
                    tags = _Tags(tag[: tag.rfind("}") + 1])
                    reader = _Reader(tags)
                elif depth == 2:
                    message = element
                elif depth == 3 and element.tag in tags.containers:
                    reader.statement, reader.entries, container = Statement(statement_id=""), 0, element
                continue
            depth -= 1
            if depth == 3 and reader.statement is not None:  # a child of a statement
                tag = element.tag
                if tag == tags.Ntry:
                    yield from reader.entry(element)
                    container.remove(element)
                elif tag in tags.header:
                    reader.statement_field(element)
            elif depth == 2 and reader.statement is not None and element is container:
                yield reader.statement
                reader.statement = None
                message.remove(element)
    except ParseError as e:
        line, column = getattr(e, "position", (0, 0))
        raise StatementParseError(FMT, f"line {line}, column {column}", "the XML is not well-formed") from None
