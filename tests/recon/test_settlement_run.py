"""`recon.settlement_run`: two imports in parallel, wait for their entries, report and summary, approval, close."""

import datetime as dt

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs import services as job_services
from jobs.models import WorkflowStep
from recon.ingest import InvalidCsvError
from recon.models import ClosedPeriod, StagingEntry, Upload
from recon.uploads import UnsupportedFormatError
from recon.workflows import settlement_run_start
from tests.jobs.conftest import drain, reload

pytestmark = pytest.mark.django_db(transaction=True)

HEADER = "order_id,amount,currency,transaction_date,type\n"


def csv_file(name: str, rows: list[tuple]) -> SimpleUploadedFile:
    body = HEADER + "".join(f"{o},{a},USD,{d},Payment\n" for o, a, d in rows)
    return SimpleUploadedFile(name, body.encode(), content_type="text/csv")


def start(ledger, operator, bank_file=None, **extra):
    provider = csv_file(
        "provider.csv", [("s1", "10.00", "2026-10-03"), ("s2", "20.00", "2026-10-04"), ("s3", "30.00", "2026-10-05")]
    )
    bank = bank_file or csv_file("bank.csv", [("s1", "10.00", "2026-10-03"), ("s2", "20.00", "2026-10-04")])
    return settlement_run_start(
        merchant=ledger.merchant,
        start_date=dt.date(2026, 10, 1),
        end_date=dt.date(2026, 10, 31),
        provider_account=ledger.payments,
        provider_file=provider,
        bank_account=ledger.bank,
        bank_file=bank,
        by=operator,
        **extra,
    )


def states(run) -> dict:
    return dict(WorkflowStep.objects.filter(job_id=run.pk).values_list("name", "state"))


def run_until_waiting(run):
    for _ in range(30):
        drain()
        if states(run).get("approval") == "WAITING":
            return
        import time

        time.sleep(0.3)
    raise AssertionError(states(run))


def test_settlement_run_imports_waits_reports_and_closes_on_approval(ledger, operator, operator_api):
    run = start(ledger, operator)
    assert run.merchant_id == "acme" and run.job_type == "recon.settlement_run"
    assert states(run)["import_provider"] == "QUEUED" and states(run)["import_bank"] == "QUEUED"
    run_until_waiting(run)
    assert reload(run).state == "WAITING"
    steps = {s.name: s for s in WorkflowStep.objects.filter(job_id=run.pk)}
    assert steps["import_provider"].result["successful_ingestions"] == 3
    assert steps["import_bank"].result["successful_ingestions"] == 2
    assert steps["wait_processed"].result["total"] == 5
    assert steps["wait_processed"].result["by_status"]["PENDING"] == 0
    assert steps["period_summary"].result["staging_entries"]["total"] == 5
    assert "open_expected_ageing" in steps["unmatched_report"].result
    assert StagingEntry.objects.filter(account__merchant_id="acme").count() == 5
    assert not ClosedPeriod.objects.exists()

    resp = operator_api.post(f"/api/jobs/{run.pk}/signal/", {"name": "approve"}, format="json")
    assert resp.status_code == 200
    drain()
    run = reload(run)
    assert run.state == "COMPLETED", run.error
    period = ClosedPeriod.objects.get()
    assert (period.start_date, period.end_date, period.closed_by) == (
        dt.date(2026, 10, 1),
        dt.date(2026, 10, 31),
        operator,
    )
    result = run.result["close"]
    assert result["status"] == "closed" and result["period_id"] == period.pk and result["approved_by"] == "operator"
    assert set(result["uploads"]) == {str(u.pk) for u in Upload.objects.all()}


def test_reject_does_not_close_and_a_bad_file_starts_nothing(ledger, operator):
    run = start(ledger, operator)
    run_until_waiting(run)
    job_services.job_signal(job_id=run.pk, name="reject")
    drain()
    run = reload(run)
    assert run.state == "COMPLETED" and run.result["close"]["status"] == "rejected"
    assert not ClosedPeriod.objects.exists()
    uploads = Upload.objects.count()
    with pytest.raises(InvalidCsvError):
        settlement_run_start(
            merchant=ledger.merchant,
            start_date=dt.date(2026, 10, 1),
            end_date=dt.date(2026, 10, 2),
            provider_account=ledger.payments,
            provider_file=csv_file("p.csv", []),
            bank_account=ledger.bank,
            bank_file=SimpleUploadedFile("b.csv", b"nope,header\n1,2\n"),
            by=operator,
        )
    assert Upload.objects.count() == uploads


def test_started_through_the_api_with_stored_uploads(ledger, operator, operator_api):
    run = start(ledger, operator)
    params = dict(run.params)
    resp = operator_api.post(
        "/api/jobs/",
        {
            "job_type": "recon.settlement_run",
            "merchant_id": "acme",
            "params": {**params, "bank_upload_id": params["provider_upload_id"]},
        },
        format="json",
    )
    assert resp.status_code == 400 and "bank_upload_id" in str(resp.json()["details"])
    resp = operator_api.post(
        "/api/jobs/",
        {"job_type": "recon.settlement_run", "merchant_id": "acme", "params": params, "idempotency_key": "oct"},
        format="json",
    )
    assert resp.status_code == 201 and resp.json()["workflow"]["name"] == "recon.settlement_run"


def test_started_from_the_admin_form_with_two_files(ledger, operator, staff_user):
    from django.test import Client

    web = Client()
    web.force_login(staff_user)
    url = "/admin/jobs/workflowstep/start/recon.settlement_run/"
    page = web.get(url)
    assert page.status_code == 200 and 'type="file"' in page.content.decode()
    body = {
        "merchant": "acme",
        "start_date": "2026-10-01",
        "end_date": "2026-10-31",
        "provider_account": str(ledger.payments.pk),
        "bank_account": str(ledger.bank.pk),
        "provider_file": csv_file("provider.csv", [("a1", "5.00", "2026-10-02")]),
        "bank_file": csv_file("bank.csv", [("a1", "5.00", "2026-10-02")]),
    }
    resp = web.post(url, body)
    assert resp.status_code == 302, resp.content.decode()[:2000]
    from jobs.models import Job

    run = Job.objects.get(job_type="recon.settlement_run")
    assert resp["Location"] == f"/admin/jobs/job/{run.pk}/change/"
    assert run.params["start_date"] == "2026-10-01" and Upload.objects.count() == 2
    bad = web.post(
        url,
        {**body, "end_date": "2026-09-01", "provider_file": csv_file("p.csv", []), "bank_file": csv_file("b.csv", [])},
    )
    assert bad.status_code == 200 and "Must not be before" in bad.content.decode()
    assert Job.objects.filter(job_type="recon.settlement_run").count() == 1


CAMT = (
    '<?xml version="1.0" encoding="UTF-8"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">'
    "<BkToCstmrStmt><GrpHdr><MsgId>M1</MsgId></GrpHdr><Stmt><Id>S1</Id>"
    "<Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>"
    + "".join(
        f'<Ntry><Amt Ccy="USD">{amount}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>'
        f"<BookgDt><Dt>{day}</Dt></BookgDt><AcctSvcrRef>R-{ref}</AcctSvcrRef><NtryDtls><TxDtls><Refs>"
        f"<EndToEndId>{ref}</EndToEndId></Refs></TxDtls></NtryDtls></Ntry>"
        for ref, amount, day in (("s1", "10.00", "2026-10-03"), ("s2", "20.00", "2026-10-04"))
    )
    + "</Stmt></BkToCstmrStmt></Document>"
)


def test_a_bank_statement_file_is_recognised_from_its_content_and_imported(ledger, operator):
    """The bank file of a run may be any statement format (the name says nothing); an unreadable one is refused."""
    run = start(ledger, operator, bank_file=SimpleUploadedFile("statement-2026-10", CAMT.encode()))
    run_until_waiting(run)
    steps = {s.name: s for s in WorkflowStep.objects.filter(job_id=run.pk)}
    assert steps["import_bank"].result["successful_ingestions"] == 2, steps["import_bank"].error
    assert StagingEntry.objects.filter(account=ledger.bank).count() == 2
    uploads = Upload.objects.count()
    with pytest.raises(UnsupportedFormatError):
        start(ledger, operator, bank_file=SimpleUploadedFile("bank.csv", b"%PDF-1.7 not a statement"))
    assert Upload.objects.count() == uploads
