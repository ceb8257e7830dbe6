"""Statement parsers: every case API.md and the issue name, on files written here, plus round trips."""

import datetime as dt
import io
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recon.statements import IN, OUT, Line, Statement, StatementParseError, detect_format, parse
from tests.recon import statement_files as f


def read(fmt: str, data: bytes) -> tuple[list[Line], list[Statement]]:
    items = list(parse(fmt, io.BytesIO(data)))
    return [i for i in items if isinstance(i, Line)], [i for i in items if isinstance(i, Statement)]


# camt ---------------------------------------------------------------------------------------------------------


def test_camt_statements_accounts_balances_and_sequence():
    first = f.camt_statement(
        "S-1",
        f.camt_entry("100.00", "CRDT", ref="R1") + f.camt_entry("30.50", "DBIT", ref="R2"),
        balances=f.camt_balance("OPBD", "10.00", "2026-10-31") + f.camt_balance("CLBD", "79.50", "2026-11-01"),
        seq="7",
    )
    second = f.camt_statement("S-2", f.camt_entry("5.00", "CRDT", ref="R3"), iban="FR7630006000011234567890189")
    lines, statements = read("camt053", f.camt(first + second))
    assert [(x.amount, x.direction, x.bank_reference, x.statement_id, x.position) for x in lines] == [
        (Decimal("100.00"), IN, "R1", "S-1", 1),
        (Decimal("30.50"), OUT, "R2", "S-1", 2),
        (Decimal("5.00"), IN, "R3", "S-2", 3),
    ]
    s1, s2 = statements
    assert (s1.account, s1.sequence, s1.opening_balance, s1.closing_balance, s1.balanced) == (
        "DE89370400440532013000",
        "7",
        Decimal("10.00"),
        Decimal("79.50"),
        True,
    )
    assert s1.opening_date == dt.date(2026, 10, 31) and s2.account.startswith("FR76") and s2.balanced is None
    assert lines[0].bank_transaction_code == "PMNT/RCDT/ESCT"


@pytest.mark.parametrize("version", ["053.001.02", "053.001.04", "053.001.06", "053.001.08"])
def test_camt_versions_read_alike(version):
    status = "<Sts><Cd>BOOK</Cd></Sts>" if version.endswith("08") else "<Sts>BOOK</Sts>"
    lines, _ = read("camt053", f.camt(f.camt_statement("S", f.camt_entry("1.23", "DBIT", status=status)), version))
    assert [(x.amount, x.direction) for x in lines] == [(Decimal("1.23"), OUT)]


@pytest.mark.parametrize(
    "version,root,tag", [("052.001.02", "BkToCstmrAcctRpt", "Rpt"), ("054.001.02", "BkToCstmrDbtCdtNtfctn", "Ntfctn")]
)
def test_camt_reports_and_notifications(version, root, tag):
    data = f.camt(f.camt_statement("N-1", f.camt_entry("9.99", "CRDT"), tag=tag), version, root)
    assert detect_format(data) == "camt053"
    lines, statements = read("camt053", data)
    assert [x.amount for x in lines] == [Decimal("9.99")] and statements[0].statement_id == "N-1"


def test_camt_pending_entries_are_not_lines_and_empty_statements_are_fine():
    body = f.camt_statement(
        "S",
        f.camt_entry("1.00", "CRDT", status="<Sts>PDNG</Sts>")
        + f.camt_entry("2.00", "CRDT", status="<Sts><Cd>INFO</Cd></Sts>"),
    )
    lines, statements = read("camt053", f.camt(body + f.camt_statement("EMPTY", "")))
    assert lines == [] and [s.statement_id for s in statements] == ["S", "EMPTY"]


def test_camt_batch_booking_becomes_one_line_per_detail():
    details = (
        "<NtryDtls><Btch><PmtInfId>PAYOUT-77</PmtInfId><NbOfTxs>2</NbOfTxs></Btch>"
        "<TxDtls><Refs><AcctSvcrRef>D1</AcctSvcrRef><EndToEndId>E2E-1</EndToEndId></Refs>"
        '<AmtDtls><TxAmt><Amt Ccy="EUR">60.00</Amt></TxAmt></AmtDtls>'
        "<RltdPties><Dbtr><Nm>Alice  Buyer</Nm></Dbtr><DbtrAcct><Id><IBAN>DE02100100109307118603</IBAN></Id>"
        "</DbtrAcct></RltdPties><RmtInf><Ustrd>ORD-1</Ustrd><Ustrd>thanks</Ustrd></RmtInf></TxDtls>"
        '<TxDtls><Refs><EndToEndId>NOTPROVIDED</EndToEndId></Refs><Amt Ccy="EUR">40.00</Amt>'
        "<RmtInf><Strd><CdtrRefInf><Ref>RF18539007547034</Ref></CdtrRefInf></Strd></RmtInf></TxDtls>"
        "</NtryDtls>"
    )
    entry = f.camt_entry("100.00", "CRDT", ref="BATCH", details=details)
    lines, statements = read("camt053", f.camt(f.camt_statement("S", entry), "053.001.08"))
    a, b = lines
    assert (
        a.amount,
        a.batch_reference,
        a.bank_reference,
        a.end_to_end_id,
        a.counterparty_name,
        a.counterparty_account,
        a.remittance_info,
    ) == (Decimal("60.00"), "PAYOUT-77", "D1", "E2E-1", "Alice Buyer", "DE02100100109307118603", "ORD-1 thanks")
    assert (b.amount, b.batch_reference, b.bank_reference, b.end_to_end_id, b.structured_reference) == (
        Decimal("40.00"),
        "PAYOUT-77",
        "BATCH",
        "",
        "RF18539007547034",
    )
    assert statements[0].lines_total == Decimal("100.00")


def test_camt_batch_reference_falls_back_to_the_entry():
    details = (
        '<NtryDtls><TxDtls><Amt Ccy="EUR">1.00</Amt></TxDtls><TxDtls><Amt Ccy="EUR">2.00</Amt></TxDtls></NtryDtls>'
    )
    lines, _ = read(
        "camt053", f.camt(f.camt_statement("S", f.camt_entry("3.00", "DBIT", ref="ACC-9", details=details)))
    )
    assert [x.batch_reference for x in lines] == ["ACC-9", "ACC-9"]
    lines, _ = read("camt053", f.camt(f.camt_statement("S", f.camt_entry("3.00", "DBIT", details=details))))
    assert [x.batch_reference for x in lines] == ["S:1", "S:1"]


def test_camt_single_detail_and_details_without_amounts_are_one_line():
    details = (
        "<NtryDtls><TxDtls><RmtInf><Ustrd>first</Ustrd></RmtInf></TxDtls>"
        "<TxDtls><RmtInf><Ustrd>second</Ustrd></RmtInf></TxDtls></NtryDtls>"
    )
    lines, _ = read("camt053", f.camt(f.camt_statement("S", f.camt_entry("3.00", "CRDT", details=details))))
    assert [(x.amount, x.remittance_info, x.batch_reference) for x in lines] == [(Decimal("3.00"), "first second", "")]


def test_camt_reversal_value_date_and_counterparty_of_money_out():
    details = (
        "<NtryDtls><TxDtls><RltdPties><Cdtr><Pty><Nm>Supplier GmbH</Nm></Pty></Cdtr><CdtrAcct><Id><Othr>"
        "<Id>ACC-55</Id></Othr></Id></CdtrAcct></RltdPties></TxDtls></NtryDtls>"
    )
    lines, _ = read(
        "camt053",
        f.camt(
            f.camt_statement(
                "S",
                f.camt_entry("12.00", "DBIT", reversal=True, booking="2026-11-03", value="2026-11-01", details=details),
            )
        ),
    )
    (line,) = lines
    assert (line.direction, line.reversal, line.booking_date, line.value_date, line.effective_date) == (
        OUT,
        True,
        dt.date(2026, 11, 3),
        dt.date(2026, 11, 1),
        dt.date(2026, 11, 1),
    )
    assert (line.counterparty_name, line.counterparty_account) == ("Supplier GmbH", "ACC-55")
    assert line.metadata()["reversal"] is True and line.metadata()["value_date"] == "2026-11-01"


@pytest.mark.parametrize(
    "data,where",
    [
        (f.camt(f.camt_statement("S", f.camt_entry("1.00", "CRDT")))[:-40], "line"),
        (f.camt(f.camt_statement("S", f.camt_entry("abc", "CRDT"))), "entry 1 of statement S"),
        (f.camt(f.camt_statement("S", f.camt_entry("1.00", "BOTH"))), "entry 1 of statement S"),
        (f.camt(f.camt_statement("S", "<Ntry><CdtDbtInd>CRDT</CdtDbtInd></Ntry>")), "entry 1 of statement S"),
    ],
)
def test_broken_camt_names_format_and_position(data, where):
    with pytest.raises(StatementParseError) as e:
        read("camt053", data)
    assert e.value.format == "camt053" and where in e.value.where


def _many_statements(per_statement: int, ids=("A", "B", "C")) -> bytes:
    """Statements of `per_statement` entries each, balanced, several feed pieces long, one entry per line."""
    body = ""
    for n, stmt_id in enumerate(ids):
        entries = "\n".join(f.camt_entry(f"{i}.01", "CRDT", ref=f"{stmt_id}{i}") for i in range(1, per_statement + 1))
        total = sum(Decimal(f"{i}.01") for i in range(1, per_statement + 1))
        balances = f.camt_balance("OPBD", "0.00", "2026-10-31") + f.camt_balance("CLBD", str(total), "2026-11-01")
        body += f.camt_statement(stmt_id, "\n" + entries + "\n", seq=str(n + 1), balances=balances)
        body += "<!-- between statements -->"
    return f.camt(body)


def test_camt_statements_spanning_many_feed_pieces_read_whole_and_in_order():
    from recon.statements import camt

    data = _many_statements(400)
    assert len(data) > 4 * camt.FEED_BYTES
    lines, statements = read("camt053", data)
    assert [s.statement_id for s in statements] == ["A", "B", "C"]
    assert [s.line_count for s in statements] == [400, 400, 400] and all(s.balanced for s in statements)
    assert [s.sequence for s in statements] == ["1", "2", "3"]
    assert [line.position for line in lines] == list(range(1, 1201))
    assert [line.bank_reference for line in lines[398:402]] == ["A399", "A400", "B1", "B2"]
    assert {line.statement_id for line in lines[400:800]} == {"B"} and lines[-1].amount == Decimal("400.01")


def test_camt_broken_far_into_the_file_names_the_line_of_the_break():
    from recon.statements import camt

    text = _many_statements(400).decode()
    broken = text.replace("<AcctSvcrRef>B300</AcctSvcrRef>", "<AcctSvcrRef>B300</AcctSvcrRf>")
    assert broken.index("B300</AcctSvcrRf>") > 2 * camt.FEED_BYTES
    with pytest.raises(StatementParseError) as e:
        read("camt053", broken.encode())
    line = broken[: broken.index("B300</AcctSvcrRf>")].count("\n") + 1
    assert e.value.format == "camt053" and e.value.where.startswith(f"line {line}, column ")


@pytest.mark.parametrize("data", [b"", b"<?xml version='1.0'?>", b"<Document xmlns='urn:other'><x/></Document>"])
def test_not_a_camt_document_is_a_parse_error(data):
    with pytest.raises(StatementParseError) as e:
        read("camt053", data)
    assert e.value.format == "camt053"


def test_camt_refuses_entities():
    data = (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x "boom">]>'
        b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt>&x;</BkToCstmrStmt>'
        b"</Document>"
    )
    with pytest.raises(StatementParseError, match="refused"):
        read("camt053", data)


# MT940 / MT942 -----------------------------------------------------------------------------------------------

MT940 = b"""{1:F01BANKDEFFXXXX0000000000}{2:O9401200261102BANKDEFFXXXX00000000002611021200N}{4:
:20:STMT-1101
:25:37040044/0532013000
:28C:00042/001
:60F:C261031EUR1000,00
:61:2611011102C250,00NTRFNONREF//BREF-1
/OCMT/EUR250,00/
:86:166?00SEPA-GUTSCHRIFT?109310?20EREF+E2E-4711?21SVWZ+ORD-2001 Rech
?22nung 42?30COBADEFFXXX?31DE02200400600123456789?32Max Mus?33termann
:61:2611021102D80,50NMSCCUST-9//BREF-2
:86:Card payment
 at the shop
:61:261101RC20,00NTRFNONREF//BREF-3
:62F:C261102EUR1149,50
:86:statement info, not a line's
-}"""


def test_mt940_lines_structured_86_and_balances():
    lines, statements = read("mt940", MT940)
    a, b, c = lines
    assert (a.amount, a.direction, a.value_date, a.booking_date, a.bank_reference) == (
        Decimal("250.00"),
        IN,
        dt.date(2026, 11, 1),
        dt.date(2026, 11, 2),
        "BREF-1",
    )
    assert (a.end_to_end_id, a.remittance_info, a.counterparty_name, a.counterparty_account) == (
        "E2E-4711",
        "ORD-2001 Rechnung 42",
        "Max Mustermann",
        "DE02200400600123456789",
    )
    assert a.supplementary_details == "/OCMT/EUR250,00/" and a.bank_transaction_code == "166/SEPA-GUTSCHRIFT"
    assert (b.direction, b.remittance_info, b.bank_reference, b.bank_transaction_code) == (
        OUT,
        "Card payment at the shop",
        "BREF-2",
        "NMSC",
    )
    assert (c.direction, c.reversal, c.amount) == (OUT, True, Decimal("20.00"))  # RC: a credit reversed goes out
    (s,) = statements
    assert (s.statement_id, s.sequence, s.account, s.currency) == (
        "STMT-1101/00042/001",
        "00042/001",
        "37040044/0532013000",
        "EUR",
    )
    assert (s.opening_balance, s.closing_balance, s.line_count, s.balanced) == (
        Decimal("1000.00"),
        Decimal("1149.50"),
        3,
        True,
    )
    assert [x.statement_id for x in lines] == ["STMT-1101/00042/001"] * 3


def test_mt940_booking_date_across_the_year_end_and_reversed_debit():
    data = b":20:X\n:25:A\n:28C:1\n:60F:C261231EUR0,00\n:61:2612310102RD5,00NTRFNONREF\n:62F:C270102EUR5,00\n"
    (line,), (s,) = read("mt940", data)
    assert (line.value_date, line.booking_date, line.direction, line.reversal) == (
        dt.date(2026, 12, 31),
        dt.date(2027, 1, 2),
        IN,
        True,
    )
    assert s.balanced


def test_mt942_interim_report():
    data = (
        b":20:INTERIM\n:25:DE89370400440532013000\n:28C:5/2\n:34F:EURD0,\n:13D:2611021200+0100\n"
        b":61:2611021102C10,00NTRFREF-A//B-1\n:86:?20first?21second\n:90C:1EUR10,00\n"
    )
    (line,), (s,) = read("mt940", data)
    assert (line.amount, line.currency, line.remittance_info, line.bank_reference) == (
        Decimal("10.00"),
        "EUR",
        "firstsecond",
        "B-1",
    )
    assert s.opening_balance is None and s.balanced is None


def test_mt940_several_statements_in_one_file():
    one = b":20:A\n:25:X\n:28C:1\n:60F:C261101EUR0,00\n:61:261101C1,00NTRFNONREF\n:62F:C261101EUR1,00\n-\n"
    two = one.replace(b":20:A", b":20:B").replace(b":28C:1", b":28C:2")
    lines, statements = read("mt940", one + two)
    assert [s.statement_id for s in statements] == ["A/1", "B/2"] and [x.position for x in lines] == [1, 2]


@pytest.mark.parametrize(
    "data,where",
    [
        (b":20:X\n:25:A\n:60F:C261101EUR0,00\n:61:261101X1,00NTRF\n", "line 4"),
        (b":20:X\n:25:A\n:60F:C26110EUR0,00\n", "line 3"),
        (b":20:X\n:25:A\n:61:261101C1,00NTRFNONREF\n", "line 3"),
        (b":25:A\n", "line 1"),
    ],
)
def test_broken_mt940_names_the_line(data, where):
    with pytest.raises(StatementParseError) as e:
        read("mt940", data)
    assert e.value.format == "mt940" and e.value.where == where


# OFX -----------------------------------------------------------------------------------------------------------

OFX1 = b"""OFXHEADER:100
DATA:OFXSGML
VERSION:102
SECURITY:NONE
ENCODING:USASCII

<OFX><SIGNONMSGSRSV1><SONRS><STATUS><CODE>0<SEVERITY>INFO</STATUS><DTSERVER>20261102</SONRS></SIGNONMSGSRSV1>
<BANKMSGSRSV1><STMTTRNRS><TRNUID>1<STMTRS><CURDEF>USD<BANKACCTFROM><BANKID>121000248<ACCTID>987654<ACCTTYPE>CHECKING
</BANKACCTFROM><BANKTRANLIST><DTSTART>20261101<DTEND>20261102120000.000[-5:EST]
<STMTTRN><TRNTYPE>CREDIT<DTPOSTED>20261101120000<DTAVAIL>20261102<TRNAMT>1500.00<FITID>F-1<NAME>ACME &amp; Co<MEMO>ORD-9
</STMTTRN><STMTTRN><TRNTYPE>DEBIT<DTPOSTED>20261102<TRNAMT>-42.10<FITID>F-2<CHECKNUM>1001<PAYEE><NAME>Landlord</PAYEE>
</STMTTRN></BANKTRANLIST><LEDGERBAL><BALAMT>1457.90<DTASOF>20261102</LEDGERBAL></STMTRS></STMTTRNRS></BANKMSGSRSV1>
</OFX>"""

OFX2 = b"""<?xml version="1.0" encoding="UTF-8"?><?OFX OFXHEADER="200" VERSION="220" SECURITY="NONE"?>
<OFX><CREDITCARDMSGSRSV1><CCSTMTTRNRS><CCSTMTRS><CURDEF>EUR</CURDEF><CCACCTFROM><ACCTID>4111</ACCTID></CCACCTFROM>
<BANKTRANLIST><DTSTART>20261101</DTSTART><DTEND>20261130</DTEND>
<STMTTRN><TRNTYPE>DEBIT</TRNTYPE><DTPOSTED>20261105</DTPOSTED><TRNAMT>-9.99</TRNAMT><FITID>CC-1</FITID>
<NAME>Streaming</NAME><CURRENCY><CURRATE>1.1</CURRATE><CURSYM>USD</CURSYM></CURRENCY></STMTTRN>
</BANKTRANLIST></CCSTMTRS></CCSTMTTRNRS></CREDITCARDMSGSRSV1></OFX>"""


def test_ofx1_sgml_with_unclosed_tags():
    assert detect_format(OFX1) == "ofx"
    (a, b), (s,) = read("ofx", OFX1)
    assert (
        a.amount,
        a.direction,
        a.bank_reference,
        a.counterparty_name,
        a.remittance_info,
        a.value_date,
        a.booking_date,
    ) == (Decimal("1500.00"), IN, "F-1", "ACME & Co", "ORD-9", dt.date(2026, 11, 2), dt.date(2026, 11, 1))
    assert (b.amount, b.direction, b.counterparty_name, b.structured_reference) == (
        Decimal("42.10"),
        OUT,
        "Landlord",
        "1001",
    )
    assert (s.account, s.currency, s.closing_balance, s.closing_date, s.statement_id) == (
        "987654",
        "USD",
        Decimal("1457.90"),
        dt.date(2026, 11, 2),
        "987654:2026-11-02",
    )
    assert a.statement_id == s.statement_id


def test_ofx2_xml_credit_card_with_a_foreign_currency_line():
    assert detect_format(OFX2) == "ofx"
    (line,), (s,) = read("ofx", OFX2)
    assert (line.amount, line.direction, line.currency, s.currency, s.account) == (
        Decimal("9.99"),
        OUT,
        "USD",
        "EUR",
        "4111",
    )


@pytest.mark.parametrize(
    "data",
    [OFX1[: OFX1.index(b"</STMTTRN>") + 12], OFX1.replace(b"-42.10", b"-4x2"), OFX1.replace(b"<TRNAMT>1500.00", b"")],
)
def test_broken_ofx(data):
    with pytest.raises(StatementParseError) as e:
        read("ofx", data)
    assert e.value.format == "ofx"


# BAI2 ----------------------------------------------------------------------------------------------------------

BAI2 = b"""01,121000358,CUSTOMER,261102,0600,7,80,10,2/
02,CUSTOMER,121000358,1,261101,2400,USD,2/
03,0975312468,USD,010,500000,,,015,
88,626650,,/
16,195,150000,0,BR-1,CR-1,ORD-3001 incoming wire, from Alice/
16,475,25000,V,261102,0000,BR-2,CR-2,CHECK PAID
88,second line of text/
16,890,0,0,BR-3,,information only/
16,301,1650,0,BR-4,,/
49,1303300,6/
03,555,JPY,010,1000,,/
16,195,1000,0,BR-J,,yen/
49,2000,2/
98,3302300,2,10/
99,3302300,1,12/"""


def test_bai2_details_continuations_minor_units_and_balances():
    assert detect_format(BAI2) == "bai2"
    lines, (usd, jpy) = read("bai2", BAI2)
    a, b, c, d = lines
    assert (a.amount, a.direction, a.bank_reference, a.structured_reference, a.remittance_info) == (
        Decimal("1500.00"),
        IN,
        "BR-1",
        "CR-1",
        "ORD-3001 incoming wire, from Alice",
    )
    assert (b.amount, b.direction, b.value_date, b.remittance_info, b.bank_transaction_code) == (
        Decimal("250.00"),
        OUT,
        dt.date(2026, 11, 2),
        "CHECK PAID second line of text",
        "475",
    )
    assert (c.amount, c.direction, c.bank_reference) == (Decimal("16.50"), IN, "BR-4")
    assert (d.amount, d.currency) == (Decimal("1000"), "JPY")
    assert (usd.opening_balance, usd.closing_balance, usd.balanced, usd.account) == (
        Decimal("5000.00"),
        Decimal("6266.50"),
        True,
        "0975312468",
    )
    assert a.booking_date == dt.date(2026, 11, 1) and jpy.statement_id == "555:2026-11-01"


@pytest.mark.parametrize(
    "data,where",
    [
        (BAI2.replace(b"49,1303300,6/", b"49,1303301,6/"), "line 10"),
        (BAI2[: BAI2.index(b"49,1303300")], "end of file"),
        (b"88,oops/\n", "line 1"),
        (BAI2.replace(b"16,301,1650", b"16,301,16.50"), "line 9"),
        (b"02,CUSTOMER,121000358,1,261101,2400,USD,2/\n", "line 1"),
    ],
)
def test_broken_bai2_names_the_line(data, where):
    with pytest.raises(StatementParseError) as e:
        read("bai2", data)
    assert e.value.format == "bai2" and e.value.where == where


# Detection and round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,fmt",
    [
        (b"order_id,amount,currency,transaction_date,type\n1,2,USD,2026-11-01,Payment\n", "csv"),
        (b"\xef\xbb\xbfReference;Net;Currency\n", "csv"),
        (b"a,b\r\n1,2\r\n", "csv"),
        (MT940, "mt940"),
        (b":20:X\r\n:25:Y\r\n", "mt940"),
        (BAI2, "bai2"),
        (OFX1, "ofx"),
        (OFX2, "ofx"),
        (f.camt(""), "camt053"),
        (b"<html><body>hi</body></html>", None),
        (b"\x89PNG\r\n\x1a\n\x00\x00", None),
        (b"just words", None),
        (b"", None),
    ],
)
def test_format_comes_from_the_content(data, fmt):
    assert detect_format(data) == fmt


lines_strategy = st.lists(
    st.tuples(
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal("999999.99"), places=2),
        st.sampled_from([IN, OUT]),
        st.text("ABCDEFGHJK0123456789", min_size=1, max_size=12),
        st.text("abcdefghij KLMNOP0123456789", min_size=1, max_size=30).map(str.strip).filter(bool),
    ),
    max_size=25,
)


@pytest.mark.parametrize(
    "fmt,render",
    [("camt053", f.render_camt), ("mt940", f.render_mt940), ("ofx", f.render_ofx), ("bai2", f.render_bai2)],
)
@settings(max_examples=40, deadline=None)
@given(generated=lines_strategy)
def test_generated_statements_round_trip(fmt, render, generated):
    data = render(generated)
    assert detect_format(data) == fmt
    lines, statements = read(fmt, data)
    assert [(x.amount, x.direction, x.bank_reference) for x in lines] == [(a, d, r) for a, d, r, _ in generated]
    assert [" ".join(x.remittance_info.split()) for x in lines] == [" ".join(t.split()) for *_, t in generated]
    assert sum(s.line_count for s in statements) == len(generated)
