"""CSV upload -> `recon.import_csv` job: the API contract (202/400/403/404/409/413), the report, pause/resume,
and a real qcluster SIGKILLed in the middle of a 100,000-row import."""

import os
import signal
import time
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs import runtime
from jobs import services as job_services
from jobs.models import Job, JobEvent
from recon import uploads
from recon.models import StagingEntry, Upload, UploadChunk
from tests.conftest import wait_until
from tests.jobs.conftest import drain, reload
from tests.recon.factories import AccountFactory

HEADER = "order_id,amount,currency,transaction_date,type\n"


def csv_bytes(rows: int, *, prefix: str = "o", start: int = 1) -> bytes:
    lines = [HEADER] + [f"{prefix}{n},{n % 900 + 1}.25,USD,2026-11-{n % 28 + 1:02d},Payment\n"
                        for n in range(start, start + rows)]
    return "".join(lines).encode()


def upload(api, account_id, content: bytes, *, name="payments.csv", mode="TRANSACTION", query="", slash="/"):
    body = {"file": SimpleUploadedFile(name, content, content_type="text/csv")}
    if mode is not None:
        body["processing_mode"] = mode
    return api.post(f"/api/accounts/{account_id}/staging-entries/files{slash}{query}", body, format="multipart")


# --- the contract -------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_upload_starts_a_job_that_creates_entries_and_reports_bad_rows(ledger, operator_api):
    content = ("\ufeff" + HEADER + "a1,10.00,USD,2026-11-01,Payment\n"
               "a2,20.50,USD,2026-11-02T10:00:00Z,refund\n"
               "\n"
               "a3,abc,,2026-11-03,Payment\n"
               "a4,5,USD,yesterday,Gift\n"
               "a5,7.5,USD,2026-11-04,CREDIT\n").encode()
    response = upload(operator_api, ledger.payments.pk, content, name="Nov.CSV")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert set(body) == {"job_id", "status_url"} and body["status_url"] == f"/api/jobs/{body['job_id']}/"
    job = Job.objects.get(pk=body["job_id"])
    assert job.job_type == "recon.import_file" and job.merchant_id == "acme"
    assert job.params["processing_mode"] == "TRANSACTION"

    drain()
    status = operator_api.get(body["status_url"]).json()
    assert status["state"] == "COMPLETED" and status["progress"] == 100
    report = status["result"]
    assert report["successful_ingestions"] == 3 and report["failed_ingestions"] == 2
    assert report["errors"] == [
        {"row_number": 3, "error_details": "currency is empty; amount 'abc' is not a number",
         "row_data": {"order_id": "a3", "amount": "abc", "currency": "", "transaction_date": "2026-11-03",
                      "type": "Payment"}},
        {"row_number": 4, "error_details": "transaction_date 'yesterday' is not a date (YYYY-MM-DD) or a date-time "
                                           "with timezone; type 'Gift' is not one of Payment, Refund, Debit, Credit",
         "row_data": {"order_id": "a4", "amount": "5", "currency": "USD", "transaction_date": "yesterday",
                      "type": "Gift"}},
    ]
    entries = {e.metadata["order_id"]: e for e in StagingEntry.objects.filter(account=ledger.payments)}
    assert set(entries) == {"a1", "a2", "a5"}
    assert entries["a1"].entry_type == "DEBIT" and entries["a2"].entry_type == "CREDIT"
    assert entries["a5"].entry_type == "CREDIT"
    assert all(e.metadata["source_file"] == "Nov.CSV" and e.processing_mode == "TRANSACTION"
               for e in entries.values())
    # The engine processed them (drain runs the staging tasks too).
    assert StagingEntry.objects.filter(account=ledger.payments, status="PROCESSED").count() == 3
    stored = Upload.objects.get()
    assert stored.name == "Nov.CSV" and stored.size == len(content) and stored.account_id == ledger.payments.pk


@pytest.mark.django_db
def test_upload_validation_errors_are_400(ledger, operator_api):
    url = f"/api/accounts/{ledger.payments.pk}/staging-entries/files/"
    no_file = operator_api.post(url, {"processing_mode": "TRANSACTION"}, format="multipart")
    assert no_file.status_code == 400 and no_file.json()["code"] == "validation_error"
    assert "file" in no_file.json()["details"]
    png = upload(operator_api, ledger.payments.pk, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", name="rows.csv")
    assert png.status_code == 400 and png.json()["code"] == "unsupported_format"
    bad_format = upload(operator_api, ledger.payments.pk, csv_bytes(1), query="", name="x.csv", mode="TRANSACTION")
    assert bad_format.status_code == 202  # the name does not matter, and neither does its extension
    missing_mode = upload(operator_api, ledger.payments.pk, csv_bytes(1), mode=None)
    assert missing_mode.status_code == 400 and "processing_mode" in missing_mode.json()["details"]
    bad_mode = upload(operator_api, ledger.payments.pk, csv_bytes(1), mode="MATCHING")
    assert bad_mode.status_code == 400 and "processing_mode" in bad_mode.json()["details"]
    bad_header = upload(operator_api, ledger.payments.pk, b"order,amount\nx,1\n")
    assert bad_header.status_code == 400 and bad_header.json()["code"] == "invalid_csv"
    assert bad_header.json()["details"]["missing"] == ["order_id", "currency", "transaction_date", "type"]
    empty = upload(operator_api, ledger.payments.pk, b"\n\n")
    assert empty.status_code == 400 and empty.json()["code"] == "unsupported_format"
    assert Upload.objects.count() == 1 and Job.objects.count() == 1  # only the good one


@pytest.mark.django_db
def test_upload_404_before_403_and_viewers_are_refused(ledger, viewer_api, other_merchant_operator_api,
                                                       operator_api):
    assert upload(operator_api, uuid.uuid4(), csv_bytes(1)).status_code == 404
    assert upload(operator_api, "not-a-uuid", csv_bytes(1)).status_code == 404
    other = upload(other_merchant_operator_api, ledger.payments.pk, csv_bytes(1), mode=None)
    assert other.status_code == 404 and other.json()["code"] == "not_found"
    viewer = upload(viewer_api, ledger.payments.pk, csv_bytes(1))
    assert viewer.status_code == 403
    assert not Upload.objects.exists() and not Job.objects.exists()


@pytest.mark.django_db
def test_upload_without_trailing_slash(ledger, staff_api):
    response = upload(staff_api, ledger.payments.pk, csv_bytes(2), slash="")
    assert response.status_code == 202


@pytest.mark.django_db
def test_upload_above_the_limit_is_413(ledger, operator_api, settings):
    settings.UPLOAD_MAX_BYTES = 1000
    # Content-Length far above the limit: refused before the body is read.
    huge = upload(operator_api, ledger.payments.pk, csv_bytes(5000))
    assert huge.status_code == 413
    assert huge.json()["code"] == "payload_too_large" and huge.json()["details"]["max_bytes"] == 1000
    # Within the Content-Length slack but above the limit: caught while the body streams in.
    over = upload(operator_api, ledger.payments.pk, csv_bytes(60))
    assert 1000 < len(csv_bytes(60)) < 1000 + 64 * 1024
    assert over.status_code == 413 and over.json()["code"] == "payload_too_large"
    # At the limit: accepted.
    content = csv_bytes(200)[:1000].rsplit(b"\n", 1)[0] + b"\n"
    assert upload(operator_api, ledger.payments.pk, content).status_code == 202
    assert Upload.objects.count() == 1


@pytest.mark.django_db
def test_same_content_twice_is_409_unless_forced(ledger, operator_api):
    content = csv_bytes(3)
    assert upload(operator_api, ledger.payments.pk, content).status_code == 202
    again = upload(operator_api, ledger.payments.pk, content, name="renamed.csv")
    assert again.status_code == 409 and again.json()["code"] == "duplicate_upload"
    assert again.json()["details"]["name"] == "payments.csv"
    assert Upload.objects.count() == 1 and Job.objects.count() == 1
    # Another account may receive the same file; ?force=true imports it again here.
    assert upload(operator_api, ledger.bank.pk, content, mode="CONFIRMATION").status_code == 202
    forced = upload(operator_api, ledger.payments.pk, content, query="?force=true")
    assert forced.status_code == 202
    assert Job.objects.count() == 3


@pytest.mark.django_db
def test_jobs_api_refuses_an_upload_of_another_account(ledger, staff_api):
    job_id = upload(staff_api, ledger.payments.pk, csv_bytes(1)).json()["job_id"]
    params = dict(Job.objects.get(pk=job_id).params, account_id=str(ledger.bank.pk))
    response = staff_api.post("/api/jobs/", {"job_type": "recon.import_csv", "params": params,
                                             "merchant_id": "acme"}, format="json")
    assert response.status_code == 400 and "upload_id" in response.json()["details"]["params"]


# --- storage ------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_stored_upload_is_chunked_and_read_back_lazily(ledger, monkeypatch):
    monkeypatch.setattr(uploads, "CHUNK_BYTES", 1000)
    content = ("\ufeff" + HEADER + "".join(f"é{n},1.00,USD,2026-11-01,Payment\r\n" for n in range(300))).encode()
    stored = uploads.upload_store(account=ledger.payments, name="x.csv", source=[content[:777], content[777:]])
    assert stored.size == len(content) and UploadChunk.objects.filter(upload=stored).count() == len(content) // 1000 + 1
    assert stored.line_count == 301
    lines = list(uploads.open_lines(stored))
    assert "".join(lines) == content.decode("utf-8-sig") and len(lines) == 301


# --- running ------------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_paused_import_resumes_at_the_next_row(ledger):
    account = AccountFactory(merchant=ledger.merchant, account_name="no rule")
    job = uploads.file_import_start(account=account, file=SimpleUploadedFile("p.csv", csv_bytes(95)), name="p.csv",
                                   processing_mode="TRANSACTION", chunk_rows=10)
    # One slice whose budget is already spent: it commits one chunk (with its checkpoint) and stops.
    assert runtime.run_slice(job.pk, deadline=time.monotonic()) == "continue"
    assert reload(job).checkpoint["rows_done"] == 10
    job_services.job_pause(job_id=job.pk, by=None)
    assert StagingEntry.objects.filter(account=account).count() == 10
    drain()
    assert reload(job).state == "PAUSED" and StagingEntry.objects.filter(account=account).count() == 10

    job_services.job_resume(job_id=job.pk, by=None)
    drain()
    job = reload(job)
    assert job.state == "COMPLETED", job.error
    assert job.result == {"format": "csv", "statements": [], "duplicates_skipped": 0, "successful_ingestions": 95,
                          "failed_ingestions": 0, "errors": []}
    orders = StagingEntry.objects.filter(account=account).values_list("metadata__order_id", flat=True)
    assert len(orders) == 95 and len(set(orders)) == 95
    assert any("resuming p.csv after row 10" in e.data.get("message", "")
               for e in JobEvent.objects.filter(job=job, kind="log"))


@pytest.mark.django_db(transaction=True)
def test_bad_bytes_further_down_are_row_errors_and_the_other_rows_are_imported(ledger):
    """Issue 17, item 5: invalid UTF-8, a NUL and a field over 128 KiB are each one row error."""
    content = ((HEADER + "a1,1.00,USD,2026-11-01,Payment\n").encode() + b"a2,\xff\xfe,USD,2026-11-01,Payment\n"
               + b"a3\x00,1.00,USD,2026-11-01,Payment\n" + b"a4," + b"9" * (129 * 1024) + b",USD,2026-11-01,Payment\n"
               + b"\xc3(,2.00,USD,2026-11-01,Payment\n" + b"a6,3.00,USD,2026-11-01,Payment\n")
    job = uploads.file_import_start(account=ledger.payments, file=SimpleUploadedFile("bad.csv", content),
                                   name="bad.csv", processing_mode="TRANSACTION")
    drain()
    job = reload(job)
    assert job.state == "COMPLETED", job.error
    report = job.result
    assert (report["successful_ingestions"], report["failed_ingestions"]) == (2, 4)
    errors = {e["row_number"]: e for e in report["errors"]}
    assert "amount is not valid UTF-8 text" in errors[2]["error_details"]
    assert errors[2]["row_data"]["amount"] == "\ufffd\ufffd"
    assert "order_id contains a NUL character" in errors[3]["error_details"]
    assert "field larger than field limit (131072)" in errors[4]["error_details"]
    assert "order_id is not valid UTF-8 text" in errors[5]["error_details"]
    assert sorted(StagingEntry.objects.values_list("metadata__order_id", flat=True)) == ["a1", "a6"]


FAST = {"TRACKER_LEASE_SECONDS": 3, "TRACKER_RESCUE_EVERY_SECONDS": 1, "TRACKER_POLL_SECONDS": 0.2,
        "JOBS_SLICE_SECONDS": 15, "JOBS_STOP_CHECK_SECONDS": 0.5}
ROWS = 100_000


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_import_of_100k_rows_survives_a_killed_cluster_without_duplicates(ledger, processes):
    account = ledger.payments
    content = csv_bytes(ROWS, prefix="bulk-")
    job = uploads.file_import_start(account=account, file=SimpleUploadedFile("bulk.csv", content), name="bulk.csv",
                                   processing_mode="TRANSACTION", chunk_rows=2500)
    cluster = processes.start(["manage.py", "qcluster"], **FAST)
    wait_until(lambda: reload(job).checkpoint.get("rows_done", 0) >= 10_000, 60, message="10,000 rows imported")
    os.killpg(cluster.pid, signal.SIGKILL)
    cluster.wait(timeout=10)
    time.sleep(0.5)  # let PostgreSQL finish with the killed backends
    killed = reload(job)
    done_before = killed.checkpoint["rows_done"]
    assert killed.state == "RUNNING" and 0 < done_before < ROWS
    assert StagingEntry.objects.filter(account=account).count() == done_before  # chunk and checkpoint together

    processes.start(["manage.py", "qcluster"], **FAST)
    wait_until(lambda: reload(job).state in ("COMPLETED", "FAILED"), 90, message="import completed after restart")
    job = reload(job)
    assert job.state == "COMPLETED", job.error
    assert job.result == {"successful_ingestions": ROWS, "failed_ingestions": 0, "errors": []}
    assert StagingEntry.objects.filter(account=account).count() == ROWS
    distinct = (StagingEntry.objects.filter(account=account).values("metadata__order_id").distinct().count())
    assert distinct == ROWS
    resumed = [e.data for e in JobEvent.objects.filter(job=job, kind="log") if "resum" in e.data["message"]]
    assert resumed and job.attempts >= 2


# --- admin --------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_admin_upload_form_starts_the_job_and_shows_it(ledger, staff_user, viewer):
    from django.test import Client

    client = Client()
    client.force_login(staff_user)
    change = client.get(f"/admin/recon/account/{ledger.payments.pk}/change/")
    assert change.status_code == 200 and b"import-csv/" in change.content
    url = f"/admin/recon/account/{ledger.payments.pk}/import-csv/"
    assert client.get(url).status_code == 200
    response = client.post(url, {"file": SimpleUploadedFile("a.csv", csv_bytes(3)), "processing_mode": "TRANSACTION"})
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/admin/jobs/job/{job.pk}/change/"
    assert job.job_type == "recon.import_file" and job.merchant_id == "acme" and job.owner == staff_user
    again = client.post(url, {"file": SimpleUploadedFile("a.csv", csv_bytes(3)), "processing_mode": "TRANSACTION"})
    assert again.status_code == 200 and b"already uploaded" in again.content and Job.objects.count() == 1
    bad = client.post(url, {"file": SimpleUploadedFile("b.csv", b"nope,x\n1,2\n"), "processing_mode": "TRANSACTION"})
    assert bad.status_code == 200 and b"header" in bad.content
    forced = client.post(url, {"file": SimpleUploadedFile("a.csv", csv_bytes(3)), "processing_mode": "TRANSACTION",
                               "force": "on"})
    assert forced.status_code == 302 and Job.objects.count() == 2
    assert client.get("/admin/recon/upload/").status_code == 200
    assert client.get(f"/admin/recon/upload/{Upload.objects.first().pk}/change/").status_code == 200


# --- command ------------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_recon_import_as_a_job_follows_it_to_the_report(ledger, tmp_path):
    import io
    import threading

    from django.core.management import CommandError, call_command
    from django.db import connection

    path = tmp_path / "cmd.csv"
    path.write_bytes(csv_bytes(4) + b"bad,0,USD,2026-11-01,Payment\n")
    stop = threading.Event()

    def cluster():
        while not stop.is_set():
            drain(1)
            time.sleep(0.1)
        connection.close()

    thread = threading.Thread(target=cluster)
    thread.start()
    out = io.StringIO()
    try:
        call_command("recon_import", str(path), "--account", str(ledger.payments.pk), "--mode", "TRANSACTION",
                     "--job", stdout=out)
    finally:
        stop.set()
        thread.join()
    text = out.getvalue()
    assert "4 staging entries created" in text and "1 rows failed" in text and "amount must be positive" in text
    assert Job.objects.get().state == "COMPLETED"
    with pytest.raises(CommandError, match="already uploaded"):
        call_command("recon_import", str(path), "--account", str(ledger.payments.pk), "--mode", "TRANSACTION",
                     "--job", "--no-wait", stdout=out)
    call_command("recon_import", str(path), "--account", str(ledger.payments.pk), "--mode", "TRANSACTION",
                 "--job", "--no-wait", "--force", stdout=out)
    assert Job.objects.count() == 2


@pytest.mark.django_db
def test_oversized_form_fields_are_413_not_500(ledger, operator_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = upload(operator_api, ledger.payments.pk, csv_bytes(1), mode="T" * 1000)
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    json_body = operator_api.post(f"/api/accounts/{ledger.payments.pk}/staging-entries/files/",
                                  {"processing_mode": "TRANSACTION"}, format="json")
    assert json_body.status_code == 415


@pytest.mark.django_db
def test_the_import_job_is_scoped_to_the_merchant(ledger, operator_api, other_merchant_operator_api, viewer_api):
    status_url = upload(operator_api, ledger.payments.pk, csv_bytes(1)).json()["status_url"]
    assert other_merchant_operator_api.get(status_url).status_code == 404
    assert viewer_api.get(status_url).status_code == 200
    assert viewer_api.post(status_url + "cancel/").status_code == 403
