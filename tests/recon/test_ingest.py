import io
import itertools

import pytest
from django.core.management import CommandError, call_command

from recon.ingest import InvalidCsvError, content_sha256, ingest_csv
from recon.models import StagingEntry
from tracker.models import ProcessTracker

pytestmark = pytest.mark.django_db

HEADER = "order_id,amount,currency,transaction_date,type\n"


def test_good_and_bad_rows_report(ledger):
    lines = [
        HEADER,
        "o1,10.50,USD,2026-11-01,Payment\n",
        "o2,-3,USD,2026-11-01,refund\n",
        "\n",
        ",abc,XX,someday,gift\n",
        "o4,5,USD,2026-11-02T10:00:00+01:00,REFUND\n",
        "o5,1,USD\n",
    ]
    report = ingest_csv(account=ledger.payments, lines=lines, processing_mode="TRANSACTION", source_file="a.csv")
    assert report["successful_ingestions"] == 2 and report["failed_ingestions"] == 3
    errors = {e["row_number"]: e for e in report["errors"]}
    assert set(errors) == {2, 3, 5}  # the blank line is not a row
    assert errors[2]["error_details"] == "amount must be positive"
    assert errors[2]["row_data"] == {
        "order_id": "o2",
        "amount": "-3",
        "currency": "USD",
        "transaction_date": "2026-11-01",
        "type": "refund",
    }
    details = errors[3]["error_details"]
    assert "order_id is empty" in details and "amount 'abc'" in details and "currency 'XX'" in details
    assert "transaction_date 'someday'" in details and "type 'gift'" in details
    assert "expected 5 columns, got 3" in errors[5]["error_details"]
    entries = {e.metadata["order_id"]: e for e in StagingEntry.objects.all()}
    assert entries["o1"].entry_type == "DEBIT" and entries["o4"].entry_type == "CREDIT"  # DEBIT_NORMAL account
    assert entries["o1"].metadata == {"order_id": "o1", "source_file": "a.csv"}
    assert ProcessTracker.objects.filter(task_id__in=[e.task_id for e in entries.values()]).count() == 2


def test_payment_on_credit_normal_account_is_credit(ledger):
    ingest_csv(
        account=ledger.bank,
        lines=[HEADER, "o1,1,USD,2026-11-01,payment\n", "o2,1,USD,2026-11-01,Debit\n"],
        processing_mode="CONFIRMATION",
        source_file="b.csv",
    )
    sides = dict(StagingEntry.objects.values_list("metadata__order_id", "entry_type"))
    assert sides == {"o1": "CREDIT", "o2": "DEBIT"}


@pytest.mark.parametrize(
    "header", ["", "order,amount,currency,transaction_date,type\n", "order_id,amount,currency,transaction_date\n"]
)
def test_bad_header_is_a_clear_error(ledger, header):
    with pytest.raises(InvalidCsvError) as exc:
        ingest_csv(
            account=ledger.payments,
            lines=[header] if header else [],
            processing_mode="TRANSACTION",
            source_file="x.csv",
        )
    assert "header" in exc.value.message or "empty" in exc.value.message


def rows(n, start=0):
    for i in range(start, start + n):
        yield f"o{i},{i % 7 + 1}.25,USD,2026-11-01,payment\n"


def test_chunks_commit_with_checkpoint_and_resume(ledger):
    seen = []

    def stop_after_two(rows_done, report):
        seen.append((rows_done, report["successful_ingestions"], StagingEntry.objects.count()))
        return len(seen) < 2

    report = ingest_csv(
        account=ledger.payments,
        lines=itertools.chain([HEADER], rows(25)),
        processing_mode="TRANSACTION",
        source_file="big.csv",
        chunk_rows=10,
        on_chunk=stop_after_two,
    )
    assert seen == [(10, 10, 10), (20, 20, 20)]
    assert StagingEntry.objects.count() == 20
    report = ingest_csv(
        account=ledger.payments,
        lines=itertools.chain([HEADER], rows(25)),
        processing_mode="TRANSACTION",
        source_file="big.csv",
        chunk_rows=10,
        start_row=20,
        report=report,
    )
    assert report["successful_ingestions"] == 25
    assert sorted(int(o[1:]) for o in StagingEntry.objects.values_list("metadata__order_id", flat=True)) == list(
        range(25)
    )


def test_chunk_rolls_back_with_failing_checkpoint(ledger):
    def boom(rows_done, report):
        raise RuntimeError("checkpoint failed")

    with pytest.raises(RuntimeError):
        ingest_csv(
            account=ledger.payments,
            lines=itertools.chain([HEADER], rows(5)),
            processing_mode="TRANSACTION",
            source_file="c.csv",
            chunk_rows=5,
            on_chunk=boom,
        )
    assert not StagingEntry.objects.exists() and not ProcessTracker.objects.exists()


def test_content_hash():
    assert content_sha256([b"ab", b"c"]) == content_sha256([b"abc"]) != content_sha256([b"abd"])


def test_recon_import_command(ledger, tmp_path):
    path = tmp_path / "pay.csv"
    path.write_text("\ufeff" + HEADER + "o1,10,USD,2026-11-01,Payment\no2,0,USD,2026-11-01,Payment\n")
    out = io.StringIO()
    call_command("recon_import", str(path), "--account", str(ledger.payments.pk), "--mode", "TRANSACTION", stdout=out)
    text = out.getvalue()
    assert "1 staging entries created" in text and "1 rows failed" in text and "amount must be positive" in text
    assert StagingEntry.objects.get().metadata == {"order_id": "o1", "source_file": "pay.csv"}
    with pytest.raises(CommandError):
        call_command("recon_import", str(path), "--account", "nope", "--mode", "TRANSACTION", stdout=out)


def test_other_commands(ledger, tmp_path):
    out = io.StringIO()
    ingest_csv(
        account=ledger.payments,
        lines=[HEADER, "o1,10,USD,2026-11-01,Payment\n"],
        processing_mode="TRANSACTION",
        source_file="x.csv",
    )
    call_command("recon_trigger", stdout=out)
    assert "processed=1 succeeded=1 failed=0" in out.getvalue()
    call_command("recon_summary", "--merchant", "acme", "--json", stdout=out)
    assert '"PROCESSED": 1' in out.getvalue()
    call_command("merchant_user_create", "alice", "--merchant", "acme", "--role", "operator", stdout=out)
    from django.contrib.auth import get_user_model

    from recon import access

    alice = get_user_model().objects.get(username="alice")
    assert access.visible_tenants(alice) == {"acme"} and access.can_operate(alice, "acme")
    assert not access.can_operate(alice, "other")
    with pytest.raises(CommandError):
        call_command("merchant_user_create", "bob", "--merchant", "nope", stdout=out)


def test_recon_demo_is_idempotent(db):
    out = io.StringIO()
    call_command("recon_demo", stdout=out)
    count = StagingEntry.objects.count()
    assert "sent to review: 4" in out.getvalue() and "still PENDING: 2" in out.getvalue()
    call_command("recon_demo", stdout=out)
    assert StagingEntry.objects.count() == count
