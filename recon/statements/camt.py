"""ISO 20022 camt.053 statements, camt.052 reports and camt.054 notifications, versions .001.02 to .001.08.

Streams: the C ElementTree parser builds the tree from pieces of the file fed to it, and after each piece the
parser reads the statements' children that are complete (every child but the last one so far) and drops them, so
memory stays flat whatever the file's size and no Python code runs per XML element (`parse`). A file that declares
a DOCTYPE or entities is refused before parsing (camt has none; expat >= 2.4.1 also caps entity amplification).
Every element of a camt document is in its root's namespace (one per version), so the parser reads an entry's
fields from one pass over its children and `find` on namespaced tags built once per file (`_Tags`)."""

import collections
import io
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from xml.etree.ElementTree import ParseError, TreeBuilder, XMLParser

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


def _own_text(element) -> str:
    return (element.text or "").strip() if element is not None else ""


def _amount(text: str | None, reader) -> Decimal:
    """An entry's amount from its text (`decimal_amount`, which names the entry when it is not one)."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError):
        value = None
    if value is None or not value.is_finite() or value < 0:
        return decimal_amount(FMT, reader.where(), text or "")  # the checks again, and their error
    return value


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
    """The texts a transaction detail carries: references (its first `Refs`), the other side (the debtor of money
    coming in, the creditor of money going out; its first `RltdPties`), remittance information (every `RmtInf`'s
    `Ustrd`, and `Strd/CdtrRefInf/Ref`, in file order). Only non-empty ones. One pass over the detail's children."""
    out = {}
    refs = parties = None
    unstructured: list = []
    structured: list = []
    for child in detail:
        tag = child.tag
        if tag == t.RmtInf:
            for part in child:
                if part.tag == t.Ustrd:
                    unstructured.append(part.text)
                elif part.tag == t.Strd:
                    structured.extend(r.text for c in part.findall(t.CdtrRefInf) for r in c.findall(t.Ref))
        elif tag == t.Refs:
            refs = child if refs is None else refs
        elif tag == t.RltdPties:
            parties = child if parties is None else parties
    if refs is not None:
        end_to_end = _text(refs, t.EndToEndId)
        if end_to_end and end_to_end.upper() != "NOTPROVIDED":
            out["end_to_end_id"] = end_to_end
    if parties is not None:
        role, role_account = (t.Dbtr, t.DbtrAcct) if direction == IN else (t.Cdtr, t.CdtrAcct)
        if name := clean(_text(parties, role, t.Nm) or _text(parties, role, t.Pty, t.Nm)):
            out["counterparty_name"] = name
        if account := _text(parties, role_account, t.Id, t.IBAN) or _text(parties, role_account, t.Id, t.Othr, t.Id):
            out["counterparty_account"] = account
    if remittance := " ".join(x for x in map(clean, unstructured) if x):
        out["remittance_info"] = remittance
    if structured and (reference := " ".join(x for x in map(clean, structured) if x)):
        out["structured_reference"] = reference
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
        self.dates: dict = {}

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
        fields, groups = {}, []  # the entry's children: the first of each tag; its NtryDtls
        for child in entry:
            tag = child.tag
            if tag == t.NtryDtls:
                groups.append(child)
            elif tag not in fields:
                fields[tag] = child
        get = fields.get
        if (status := get(t.Sts)) is not None:
            code = (status.text or "").strip() or _text(status, t.Cd)
            if code and code != "BOOK":
                return  # pending or information only: not an entry (API.md)
        if (amount_el := get(t.Amt)) is None or not (currency := (amount_el.get("Ccy") or "").strip().upper()):
            amount, currency = _money(amount_el, self.where())  # raises: no Amt, or no Ccy
        else:
            amount = _amount(amount_el.text, self)
        direction = DIRECTIONS.get(_own_text(get(t.CdtDbtInd)))
        if direction is None:
            direction = _direction(_own_text(get(t.CdtDbtInd)), self.where())  # raises
        common = dict(
            booking_date=self.date(get(t.BookgDt)),
            value_date=self.date(get(t.ValDt)),
            reversal=(rvsl := get(t.RvslInd)) is not None and _own_text(rvsl).lower() in ("true", "1"),
            statement_id=s.statement_id,
            bank_transaction_code=_bank_code(entry, t) if t.BkTxCd in fields else "",
        )
        details = [d for g in groups for d in g.findall(t.TxDtls)]
        entry_ref = _own_text(get(t.AcctSvcrRef))
        if len(details) > 1:
            amounts = [_detail_amount(d, t) for d in details]
            if all(a is not None for a in amounts):
                yield from self.batch(entry, groups, details, amounts, direction, common, entry_ref, self.where())
                return
        texts = _details(details[0], t, direction) if len(details) == 1 else {}
        if len(details) > 1:  # details without amounts: their texts belong to the one line
            joined = " ".join(x for x in (" ".join(_texts(d, t.RmtInf, t.Ustrd)) for d in details) if x)
            if joined:
                texts["remittance_info"] = joined
        if not texts.get("remittance_info") and (extra := clean(_own_text(get(t.AddtlNtryInf)))):
            texts["remittance_info"] = extra
        yield self.line(texts, amount, direction, currency, common, bank_reference=entry_ref)

    def where(self) -> str:
        return f"entry {self.entries} of statement {self.statement.statement_id or '?'}"

    def date(self, element):
        """The date of a date choice (`<Dt>` or `<DtTm>`) element, None without one (memoized per text)."""
        if element is None:
            return None
        text = _text(element, self.t.Dt) or _text(element, self.t.DtTm)
        if not text:
            return None
        try:
            return self.dates[text]
        except KeyError:
            day = self.dates[text] = iso_date(FMT, self.where(), text)
            if len(self.dates) > 4096:
                self.dates.clear()
            return day

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


FEED_BYTES = 64 * 1024


def parse(stream) -> Iterator[Line | Statement]:
    """Lines of every statement (report, notification) in the file, each statement's `Statement` after them.
    The `Document` holds messages (`BkToCstmrStmt`, ...), a message its statements, a statement its fields and
    entries. The file is fed to the C parser FEED_BYTES at a time; after each piece, `_Walk` reads what is complete
    of the tree it builds. The parser reports the first element's start (the root: to check it and learn the
    namespace) and then no events at all, so no Python code runs per XML element. Events are asked for with the
    parser's `_setevents`, as the standard library's own XMLPullParser does; unlike XMLPullParser's `feed`, the
    parser's raises a well-formedness error at once."""
    source = _refusing_dtds(stream)
    parser = XMLParser(target=TreeBuilder())
    starts: collections.deque = collections.deque()
    parser._setevents(starts, ("start",))
    walk: _Walk | None = None
    try:
        while True:
            data = source.read(FEED_BYTES)
            if data:
                parser.feed(data)
            else:
                parser.close()
            if walk is None:
                if not starts:
                    continue  # no element yet (close() raised if there is none at all)
                root = starts[0][1]
                if _name(root) != "Document" or "camt.05" not in root.tag:
                    raise StatementParseError(FMT, "root element", f"<{_name(root)}> is not a camt document")
                parser._setevents(starts, ())
                starts.clear()
                walk = _Walk(root)
            yield from walk.advance(final=not data)
            if not data:
                return
    except ParseError as e:
        line, column = getattr(e, "position", (0, 0))
        raise StatementParseError(FMT, f"line {line}, column {column}", "the XML is not well-formed") from None


class _Walk:
    """Reads the complete parts of a growing tree: an element is complete once a later sibling (or a later
    sibling of an ancestor) has started, or at the end of the file. Each complete child of a statement is read
    (an entry into lines, a header field into the statement's figures) and removed, then each complete statement,
    message and other element of the document, so the tree holds at most one piece's worth of elements."""

    def __init__(self, root):
        tag = root.tag
        self.root, self.tags = root, _Tags(tag[: tag.rfind("}") + 1])
        self.reader = _Reader(self.tags)
        self.container = None  # the statement being read

    def advance(self, *, final: bool) -> Iterator[Line | Statement]:
        root, t, reader = self.root, self.tags, self.reader
        messages = list(root)
        for i, message in enumerate(messages):
            message_done = final or i < len(messages) - 1
            children = list(message)
            for j, child in enumerate(children):
                child_done = message_done or j < len(children) - 1
                if child.tag in t.containers:
                    if child is not self.container:
                        reader.statement, reader.entries, self.container = Statement(statement_id=""), 0, child
                    ready = len(child) if child_done else len(child) - 1
                    if ready > 0:
                        for field in child[:ready]:
                            tag = field.tag
                            if tag == t.Ntry:
                                yield from reader.entry(field)
                            elif tag in t.header:
                                reader.statement_field(field)
                        del child[:ready]
                    if not child_done:
                        break
                    yield reader.statement
                    reader.statement, self.container = None, None
                elif not child_done:
                    break
                message.remove(child)
            if not message_done:
                break
            root.remove(message)
