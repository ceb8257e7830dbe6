"""Statement files through the one import path: upload -> `recon.import_file` job -> staging entries, with the
bank's statements kept and checked, overlapping statements skipped and broken files writing nothing."""

import time
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs import runtime
from jobs.models import Job
from recon import uploads
from recon.models import BankStatement, StagingEntry
from tests.jobs.conftest import drain, reload
from tests.recon import statement_files as f

MT940_DAY_1 = (
    b":20:D1\n:25:BANK-1\n:28C:41/1\n:60F:C261031EUR100,00\n"
    b":61:2611011101C50,00NTRFORD-1//B-1\n:86:?20ORD-1 payout\n"
    b":61:2611011101D20,00NMSCNONREF//B-2\n:86:fee\n:62F:C261101EUR130,00\n-\n"
)
MT940_DAY_1_AND_2 = (
    MT940_DAY_1.replace(b":20:D1", b":20:D1B") + b":20:D2\n:25:BANK-1\n:28C:43/1\n:60F:C261101EUR131,00\n"
    b":61:2611021102C5,00NTRFNONREF//B-3\n:62F:C261102EUR136,00\n-\n"
)


def start(account, content: bytes, *, name="statement.txt", mode="CONFIRMATION", force=False, chunk_rows=None):
    return uploads.file_import_start(
        account=account,
        file=SimpleUploadedFile(name, content),
        name=name,
        processing_mode=mode,
        force=force,
        chunk_rows=chunk_rows,
    )


@pytest.mark.django_db(transaction=True)
def test_camt_upload_over_the_api_imports_every_line(ledger, operator_api):
    details = (
        "<NtryDtls><Btch><PmtInfId>P-9</PmtInfId></Btch>"
        '<TxDtls><Amt Ccy="EUR">7.00</Amt><RmtInf><Ustrd>ORD-7</Ustrd></RmtInf></TxDtls>'
        '<TxDtls><Amt Ccy="EUR">3.00</Amt><RmtInf><Ustrd>ORD-3</Ustrd></RmtInf></TxDtls></NtryDtls>'
    )
    body = f.camt_statement(
        "S-11",
        f.camt_entry("10.00", "CRDT", ref="R-1", details=details)
        + f.camt_entry("4.00", "DBIT", ref="R-2", value="2026-11-02")
        + f.camt_entry("1.00", "CRDT", status="<Sts>PDNG</Sts>"),
        balances=f.camt_balance("OPBD", "0.00", "2026-10-31") + f.camt_balance("CLBD", "6.00", "2026-11-01"),
    )
    response = operator_api.post(
        f"/api/accounts/{ledger.bank.pk}/staging-entries/files/",
        {"file": SimpleUploadedFile("no-extension", f.camt(body)), "processing_mode": "CONFIRMATION"},
        format="multipart",
    )
    assert response.status_code == 202, response.json()
    job = Job.objects.get(pk=response.json()["job_id"])
    assert (job.job_type, job.params["format"]) == ("recon.import_file", "camt053")
    drain()
    job = reload(job)
    assert job.state == "COMPLETED", job.error
    result = job.result
    assert (
        result["format"],
        result["successful_ingestions"],
        result["failed_ingestions"],
        result["duplicates_skipped"],
        result["errors"],
    ) == ("camt053", 3, 0, 0, [])
    assert result["statements"] == [
        {
            "statement_id": "S-11",
            "account": "DE89370400440532013000",
            "currency": "EUR",
            "sequence": "1",
            "opening_balance": "0.00",
            "closing_balance": "6.00",
            "opening_date": "2026-10-31",
            "closing_date": "2026-11-01",
            "lines": 3,
            "lines_total": "6.00",
            "balanced": True,
        }
    ]
    entries = sorted(StagingEntry.objects.filter(account=ledger.bank), key=lambda e: e.amount)
    assert [(e.amount, e.entry_type, e.currency, e.processing_mode) for e in entries] == [
        (Decimal("3.0000"), "CREDIT", "EUR", "CONFIRMATION"),
        (Decimal("4.0000"), "DEBIT", "EUR", "CONFIRMATION"),
        (Decimal("7.0000"), "CREDIT", "EUR", "CONFIRMATION"),
    ]  # money in is CREDIT on a CREDIT_NORMAL account
    three, four, _ = entries
    assert {
        k: three.metadata[k]
        for k in (
            "remittance_info",
            "batch_reference",
            "bank_reference",
            "format",
            "source_file",
            "statement_id",
            "reversal",
        )
    } == {
        "remittance_info": "ORD-3",
        "batch_reference": "P-9",
        "bank_reference": "R-1",
        "format": "camt053",
        "source_file": "no-extension",
        "statement_id": "S-11",
        "reversal": False,
    }
    assert four.effective_date.date().isoformat() == "2026-11-02" and four.metadata["booking_date"] == "2026-11-01"
    stored = BankStatement.objects.get()
    assert (stored.statement_id, stored.line_count, stored.closing_balance, stored.problems) == (
        "S-11",
        3,
        Decimal("6.00"),
        [],
    )


@pytest.mark.django_db(transaction=True)
def test_a_statement_lines_texts_reach_the_metadata_whatever_their_characters(ledger):
    """The spool holds each row's COPY text: backslashes, quotes, escapes and non-ASCII text of the file (and of
    its name) reach the staging entry's metadata unchanged."""
    odd = 'back\\slash \\N \\t "quoted" &amp; é € \U0001f600'
    details = f"<NtryDtls><TxDtls><RmtInf><Ustrd>{odd}</Ustrd></RmtInf></TxDtls></NtryDtls>"
    content = f.camt(f.camt_statement("S\\1", f.camt_entry("1.00", "CRDT", ref="R\\1", details=details)))
    name = 'we\\ird "name".xml'
    job = start(ledger.bank, content, name=name)
    drain()
    assert reload(job).state == "COMPLETED", reload(job).error
    metadata = StagingEntry.objects.get().metadata
    assert (metadata["remittance_info"], metadata["bank_reference"], metadata["statement_id"]) == (
        odd.replace("&amp;", "&"),
        "R\\1",
        "S\\1",
    )
    assert metadata["source_file"] == name and metadata["upload_id"] == str(reload(job).params["upload_id"])


@pytest.mark.django_db(transaction=True)
def test_money_in_is_a_debit_on_a_debit_normal_account(ledger):
    job = start(ledger.payments, f.render_bai2([(Decimal("12.34"), "IN", "X", "t"), (Decimal("1"), "OUT", "Y", "u")]))
    drain()
    assert reload(job).state == "COMPLETED"
    assert sorted(StagingEntry.objects.values_list("amount", "entry_type")) == [
        (Decimal("1.0000"), "CREDIT"),
        (Decimal("12.3400"), "DEBIT"),
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "content,where",
    [
        (MT940_DAY_1.replace(b":61:2611011101D20,00", b":61:2611011101X20,00"), "mt940: :61:"),
        (f.camt(f.camt_statement("S", f.camt_entry("1.00", "CRDT") * 3))[:-30], "camt053: the XML is not well-formed"),
        (f.render_ofx([(Decimal("1"), "IN", "A", "b")]).replace(b"<TRNAMT>1", b"<TRNAMT>x"), "ofx: amount"),
        (f.render_bai2([(Decimal("1"), "IN", "A", "b")]).replace(b"49,100", b"49,101"), "bai2: account control"),
    ],
)
def test_a_broken_statement_fails_the_job_and_writes_nothing(ledger, content, where):
    job = start(ledger.bank, content, chunk_rows=10)
    drain()
    job = reload(job)
    assert job.state == "FAILED"
    assert where in job.error and "nothing was imported" in job.error
    assert not StagingEntry.objects.exists() and not BankStatement.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_overlapping_statements_are_skipped_and_counted(ledger):
    first = start(ledger.bank, MT940_DAY_1)
    drain()
    assert reload(first).result["successful_ingestions"] == 2
    second = start(ledger.bank, MT940_DAY_1_AND_2)  # day 1 delivered again, then day 2
    drain()
    result = reload(second).result
    assert (result["successful_ingestions"], result["duplicates_skipped"]) == (1, 2)
    assert StagingEntry.objects.count() == 3
    forced = start(ledger.bank, MT940_DAY_1_AND_2, force=True)  # the same content again counts as another file
    drain()
    assert reload(forced).result["duplicates_skipped"] == 3 and StagingEntry.objects.count() == 3
    assert StagingEntry.objects.filter(metadata__bank_reference="B-3").count() == 1


@pytest.mark.django_db(transaction=True)
def test_lines_of_one_file_never_skip_each_other_and_repeats_count_per_occurrence(ledger):
    same = [(Decimal("5.00"), "IN", "", "coffee")] * 2  # no reference: key is date, direction, amount, remittance
    ofx = f.render_ofx(same).replace(b"<FITID>", b"")
    first = start(ledger.bank, ofx)
    drain()
    assert reload(first).result["successful_ingestions"] == 2
    three = f.render_ofx(same * 2 + [(Decimal("5.00"), "IN", "", "coffee")]).replace(b"<FITID>", b"")
    second = start(ledger.bank, three)
    drain()
    assert (reload(second).result["successful_ingestions"], reload(second).result["duplicates_skipped"]) == (3, 2)


@pytest.mark.django_db(transaction=True)
def test_statement_checks_flag_gaps_openings_and_sums(ledger):
    start(ledger.bank, MT940_DAY_1)
    drain()
    broken_sum = MT940_DAY_1_AND_2.replace(b":20:D1B\n:25:BANK-1\n:28C:41/1", b":20:D1B\n:25:BANK-1\n:28C:42/1")
    broken_sum = broken_sum.replace(b":62F:C261101EUR130,00", b":62F:C261101EUR131,00", 1)
    start(ledger.bank, broken_sum)
    drain()
    problems = {s.statement_id: s.problems for s in BankStatement.objects.all()}
    assert problems == {"D1/41/1": [], "D1B/42/1": ["lines_do_not_add_up"], "D2/43/1": []}
    start(ledger.bank, b":20:D5\n:25:BANK-1\n:28C:45/1\n:60F:C261103EUR999,00\n:62F:C261103EUR999,00\n-\n")
    drain()
    assert BankStatement.objects.get(statement_id="D5/45/1").problems == ["opening_differs", "sequence_gap"]


@pytest.mark.django_db(transaction=True)
def test_an_empty_statement_completes_with_no_entries(ledger):
    job = start(ledger.bank, f.camt(f.camt_statement("EMPTY", "")))
    drain()
    job = reload(job)
    assert job.state == "COMPLETED" and job.result["successful_ingestions"] == 0
    assert [s["statement_id"] for s in job.result["statements"]] == ["EMPTY"]


@pytest.mark.django_db(transaction=True)
def test_a_statement_import_resumes_after_a_pause_without_duplicates(ledger):
    from jobs import services as job_services

    lines = [(Decimal(n), "IN", f"R{n}", f"t{n}") for n in range(1, 36)]
    job = start(ledger.bank, f.render_mt940(lines), chunk_rows=10)
    assert runtime.run_slice(job.pk, deadline=time.monotonic()) == "continue"
    assert reload(job).checkpoint["rows_done"] == 10 and StagingEntry.objects.count() == 10
    job_services.job_pause(job_id=job.pk)
    runtime.run_slice(job.pk)
    job_services.job_resume(job_id=job.pk)
    drain()
    job = reload(job)
    assert job.state == "COMPLETED", job.error
    assert (job.result["successful_ingestions"], job.result["duplicates_skipped"]) == (35, 0)
    assert StagingEntry.objects.count() == 35 and BankStatement.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_line_in_another_currency_is_imported_and_ends_in_review(ledger):
    job = start(ledger.bank, f.render_ofx([(Decimal("2.50"), "IN", "F", "x")]).replace(b"<CURDEF>EUR", b"<CURDEF>GBP"))
    drain()
    assert reload(job).state == "COMPLETED"
    entry = StagingEntry.objects.get()
    assert entry.currency == "GBP" and entry.status == "NEEDS_MANUAL_REVIEW"
    assert entry.metadata["error_type"] == "CurrencyMismatchError"


@pytest.mark.django_db(transaction=True)
def test_statements_api_lists_bank_and_ledger_balances(ledger, operator_api, other_merchant_operator_api):
    from recon.models import Account

    account = Account.objects.create(
        merchant=ledger.merchant, account_name="eur bank", account_type="CREDIT_NORMAL", currency="EUR"
    )
    start(account, MT940_DAY_1, mode="TRANSACTION")  # no rule: the entries go to review, the ledger stays at 0
    drain()
    response = operator_api.get(f"/api/accounts/{account.pk}/statements/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    (item,) = body["results"]
    assert {
        k: item[k]
        for k in (
            "statement_id",
            "format",
            "bank_account",
            "sequence",
            "opening_balance",
            "closing_balance",
            "closing_date",
            "line_count",
            "lines_total",
            "problems",
            "ledger_balance",
            "difference",
        )
    } == {
        "statement_id": "D1/41/1",
        "format": "mt940",
        "bank_account": "BANK-1",
        "sequence": "41/1",
        "opening_balance": "100.00",
        "closing_balance": "130.00",
        "closing_date": "2026-11-01",
        "line_count": 2,
        "lines_total": "30.00",
        "problems": [],
        "ledger_balance": "0.00",
        "difference": "130.00",
    }
    assert other_merchant_operator_api.get(f"/api/accounts/{account.pk}/statements/").status_code == 404
    assert operator_api.get(f"/api/accounts/{account.pk}/statements").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_overlap_check_looks_keys_up_in_the_line_key_index_for_an_account_unknown_to_the_statistics(ledger):
    """A new account's first import: the planner has no statistics for it (estimates one row). The check must
    still be one line-key lookup per key, not a scan of the account's entries per key (which grew with every
    line imported so far)."""
    import hashlib
    import json

    from django.db import connection, transaction

    from recon import services
    from recon.ingest import STATEMENT_LINE_COUNTS
    from tests.recon.factories import AccountFactory
    from tracker.bulk import array_literal

    lines = [  # an account with statement lines already (the statistics know it), as a bank's history would be
        ("CREDIT", "1.00", "EUR", "2026-11-01T00:00:00+00:00", "CONFIRMATION", json.dumps({"line_key": f"{i:032x}"}))
        for i in range(20000)
    ]
    services.staging_entries_create_rows(account=ledger.bank, rows=lines)
    new_account = AccountFactory(merchant=ledger.merchant, account_name="new bank", account_type="CREDIT_NORMAL")
    keys = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(5000)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("ANALYZE recon_stagingentry")
        cursor.execute(
            "EXPLAIN " + STATEMENT_LINE_COUNTS,
            {"account": str(new_account.pk), "upload": "none", "keys": array_literal(keys)},
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "recon_staging_line_key" in plan and "recon_staging_account_status" not in plan, plan
