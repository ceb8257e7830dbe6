"""A statement file is parsed once, into a spool of ready rows on the worker's disk, and written from it in
chunks: a broken line anywhere (near the end of a large file too) writes nothing, every slice after the first
reads the spool instead of parsing again, and an import whose worker was SIGKILLed between chunks resumes, from
the spool or (when it is gone, as on another machine) by parsing again, with the right counts."""

import os
import signal
import time
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs import runtime
from jobs.models import Job, JobEvent
from recon import uploads
from recon.models import BankStatement, StagingEntry
from tests.conftest import wait_until
from tests.jobs.conftest import drain, reload
from tests.recon import statement_files as f


@pytest.fixture
def spool_dir(settings, tmp_path):
    settings.RECON_IMPORT_SPOOL_DIR = str(tmp_path / "spool")
    return tmp_path / "spool"


def start(account, content: bytes, *, chunk_rows: int, mode="CONFIRMATION"):
    return uploads.file_import_start(
        account=account,
        file=SimpleUploadedFile("statement", content),
        name="statement",
        processing_mode=mode,
        chunk_rows=chunk_rows,
    )


def generated(n: int) -> list:
    return [(Decimal(f"{1 + i % 500}.{i % 100:02d}"), "IN" if i % 3 else "OUT", f"R{i}", f"pay {i}") for i in range(n)]


def parses(job) -> int:
    return JobEvent.objects.filter(job=job, kind="log", data__message__icontains="parsed and checked").count()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "content, where",
    [
        (f.render_mt940(generated(3000)).replace(b"//R2998\r\n", b"//R2998X\r\n:61:2611019\r\n"), "mt940: :61:"),
        (
            f.render_camt(generated(3000)).replace(
                b'R2997-N</NtryRef><Amt Ccy="EUR">498', b'R2997-N</NtryRef><Amt Ccy="EUR">4x'
            ),
            "entry 2998 of statement GEN-1",
        ),
    ],
    ids=["mt940", "camt053"],
)
def test_a_broken_line_near_the_end_of_a_large_file_writes_nothing(ledger, spool_dir, content, where):
    job = start(ledger.bank, content, chunk_rows=100)
    drain()
    job = reload(job)
    assert job.state == "FAILED", job.result
    assert where in job.error and "nothing was imported" in job.error
    assert not StagingEntry.objects.exists() and not BankStatement.objects.exists()
    assert job.checkpoint.get("rows_done", 0) == 0
    assert list(spool_dir.iterdir()) == []  # no half-written spool left behind


@pytest.mark.django_db(transaction=True)
def test_slices_after_the_first_read_the_spool_and_the_end_removes_it(ledger, spool_dir):
    lines = generated(250)
    lines[100] = (Decimal("0.00"), "IN", "R-zero", "a zero amount is a row error")
    job = start(ledger.bank, f.render_camt(lines), chunk_rows=50)
    assert runtime.run_slice(job.pk, deadline=time.monotonic()) == "continue"  # one chunk, then out of time
    assert reload(job).checkpoint["rows_done"] == 50 and StagingEntry.objects.count() == 50
    assert len([p for p in spool_dir.iterdir() if p.suffix == ".rows"]) == 1
    drain()
    job = reload(job)
    assert job.state == "COMPLETED", job.error
    assert parses(job) == 1
    assert (job.result["successful_ingestions"], job.result["failed_ingestions"]) == (249, 1)
    assert (
        job.result["errors"][0]["row_number"] == 101
        and "amount must be positive" in job.result["errors"][0]["error_details"]
    )
    assert job.result["statements"][0]["lines"] == 250
    assert StagingEntry.objects.count() == 249
    assert StagingEntry.objects.values("metadata__bank_reference").distinct().count() == 249
    assert list(spool_dir.iterdir()) == []


FAST = {
    "TRACKER_RESCUE_EVERY_SECONDS": 1,
    "TRACKER_POLL_SECONDS": 0.2,
    "JOBS_SLICE_SECONDS": 15,
    "JOBS_STOP_CHECK_SECONDS": 0.5,
}
LINES = 30_000


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("spool_kept", [True, False], ids=["from-the-spool", "parsed-again"])
def test_a_statement_import_killed_between_chunks_resumes_with_the_right_counts(
    ledger, processes, tmp_path, spool_kept
):
    spool = tmp_path / "worker-spool"
    env = {**FAST, "RECON_IMPORT_SPOOL_DIR": str(spool)}
    job = start(ledger.bank, f.render_mt940(generated(LINES)), chunk_rows=500)
    cluster = processes.start(["manage.py", "qcluster"], **env)
    wait_until(lambda: reload(job).checkpoint.get("rows_done", 0) >= 3000, 90, message="3,000 lines imported")
    os.killpg(cluster.pid, signal.SIGKILL)
    cluster.wait(timeout=10)
    time.sleep(0.5)  # let PostgreSQL finish with the killed backends
    killed = reload(job)
    done_before = killed.checkpoint["rows_done"]
    assert killed.state == "RUNNING" and 0 < done_before < LINES
    assert StagingEntry.objects.count() == done_before  # chunk and checkpoint together
    assert [p.suffix for p in spool.iterdir() if p.suffix == ".rows"] == [".rows"]
    if not spool_kept:  # as when the job resumes on another machine
        for leftover in spool.iterdir():
            leftover.unlink()

    processes.start(["manage.py", "qcluster"], **env)
    wait_until(lambda: reload(job).state in ("COMPLETED", "FAILED"), 120, message="import completed after restart")
    job = reload(job)
    assert job.state == "COMPLETED", job.error
    assert {k: job.result[k] for k in ("successful_ingestions", "failed_ingestions", "duplicates_skipped")} == {
        "successful_ingestions": LINES,
        "failed_ingestions": 0,
        "duplicates_skipped": 0,
    }
    assert StagingEntry.objects.count() == LINES
    assert StagingEntry.objects.values("metadata__bank_reference").distinct().count() == LINES
    assert BankStatement.objects.count() == 1 and BankStatement.objects.get().line_count == LINES
    assert parses(job) == (1 if spool_kept else 2)
    assert job.attempts >= 2 and list(spool.iterdir()) == []
    assert Job.objects.filter(pk=job.pk, state="COMPLETED").exists()
