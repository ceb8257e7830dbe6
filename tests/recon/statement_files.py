"""Statement files for the tests, written here (no fixtures copied from other projects), and renderers that turn
generated lines into each format for the round-trip property tests."""

from decimal import Decimal


def camt(body: str, version: str = "053.001.02", root: str = "BkToCstmrStmt") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.{version}">'
            f"<{root}><GrpHdr><MsgId>MSG1</MsgId><CreDtTm>2026-11-02T06:00:00</CreDtTm></GrpHdr>{body}</{root}>"
            "</Document>").encode()


def camt_balance(code: str, amount: str, date: str, side: str = "CRDT") -> str:
    return (f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp><Amt Ccy=\"EUR\">{amount}</Amt>"
            f"<CdtDbtInd>{side}</CdtDbtInd><Dt><Dt>{date}</Dt></Dt></Bal>")


def camt_entry(amount: str, side: str, *, ref: str = "", status: str = "<Sts>BOOK</Sts>", reversal: bool = False,
               booking: str = "2026-11-01", value: str = "", details: str = "", ccy: str = "EUR") -> str:
    return (f'<Ntry>{f"<NtryRef>{ref}-N</NtryRef>" if ref else ""}<Amt Ccy="{ccy}">{amount}</Amt>'
            f"<CdtDbtInd>{side}</CdtDbtInd>{'<RvslInd>true</RvslInd>' if reversal else ''}{status}"
            f"<BookgDt><Dt>{booking}</Dt></BookgDt>{f'<ValDt><Dt>{value}</Dt></ValDt>' if value else ''}"
            f"{f'<AcctSvcrRef>{ref}</AcctSvcrRef>' if ref else ''}"
            "<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>"
            f"{details}</Ntry>")


def camt_statement(stmt_id: str, entries: str, *, iban: str = "DE89370400440532013000", seq: str = "1",
                   balances: str = "", tag: str = "Stmt") -> str:
    return (f"<{tag}><Id>{stmt_id}</Id><ElctrncSeqNb>{seq}</ElctrncSeqNb><CreDtTm>2026-11-02T06:00:00</CreDtTm>"
            f"<Acct><Id><IBAN>{iban}</IBAN></Id><Ccy>EUR</Ccy></Acct>{balances}{entries}</{tag}>")


def render_camt(lines) -> bytes:
    """A camt.053 file with one statement holding `lines` [(amount, direction, reference, text)]."""
    entries = "".join(camt_entry(str(a), "CRDT" if d == "IN" else "DBIT", ref=r,
                                 details=f"<NtryDtls><TxDtls><RmtInf><Ustrd>{t}</Ustrd></RmtInf></TxDtls></NtryDtls>")
                      for a, d, r, t in lines)
    return camt(camt_statement("GEN-1", entries))


def mt940_amount(amount: Decimal) -> str:
    return f"{amount:.2f}".replace(".", ",")


def render_mt940(lines) -> bytes:
    out = [":20:GEN", ":25:DE89370400440532013000", ":28C:1/1", ":60F:C261031EUR0,00"]
    total = Decimal(0)
    for amount, direction, ref, text in lines:
        out.append(f":61:2611011101{'C' if direction == 'IN' else 'D'}{mt940_amount(amount)}NTRFNONREF//{ref}")
        out.append(f":86:{text}")
        total += amount if direction == "IN" else -amount
    out.append(f":62F:{'C' if total >= 0 else 'D'}261101EUR{mt940_amount(abs(total))}")
    return ("\r\n".join(out) + "\r\n-\r\n").encode()


def render_ofx(lines) -> bytes:
    body = "".join(f"<STMTTRN><TRNTYPE>{'CREDIT' if d == 'IN' else 'DEBIT'}<DTPOSTED>20261101"
                   f"<TRNAMT>{'' if d == 'IN' else '-'}{a}<FITID>{r}<MEMO>{t}</STMTTRN>" for a, d, r, t in lines)
    return ("OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\n\n<OFX><BANKMSGSRSV1><STMTTRNRS><STMTRS><CURDEF>EUR"
            "<BANKACCTFROM><ACCTID>12345</BANKACCTFROM><BANKTRANLIST><DTSTART>20261101<DTEND>20261101"
            f"{body}</BANKTRANLIST></STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>").encode()


def render_bai2(lines) -> bytes:
    records = ["01,BANK,CUST,261102,0600,1,,,2/", "02,CUST,BANK,1,261101,,EUR,2/", "03,12345,EUR/"]
    control = Decimal(0)
    for amount, direction, ref, text in lines:
        minor = int(amount * 100)
        control += minor
        records.append(f"16,{'195' if direction == 'IN' else '495'},{minor},0,{ref},,{text}/")
    records += [f"49,{int(control)},{len(lines) + 2}/", "98,0,1,1/", "99,0,1,1/"]
    return "\n".join(records).encode()
