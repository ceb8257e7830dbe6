"""CSV column mapping (API.md "File import", `mapping`): a provider export with its own columns, date format,
decimal comma and delimiter; signed amounts without a type column; unmapped columns kept in the metadata."""

import html
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import Job
from recon import uploads
from recon.models import StagingEntry
from tests.jobs.conftest import drain, reload

EXPORT = (
    "Reference;Net;Currency;Created (UTC);Payout ID;Fee\n"
    "ORD-1;1234,50;usd;01.11.2026;po_9;0,30\n"
    "ORD-2;-20,00;USD;02.11.2026;po_9;0,00\n"
    "ORD-3;abc;USD;31.02.2026;po_9;0\n"
    "ORD-4;5,00;USD;03.11.2026;;0\n"
)
MAPPING = {
    "order_id": "Reference",
    "amount": "Net",
    "currency": "Currency",
    "transaction_date": "Created (UTC)",
    "date_format": "%d.%m.%Y",
    "decimal_separator": ",",
    "delimiter": ";",
}


def upload(api, account_id, content: str, mapping, *, name="export.txt"):
    body = {"file": SimpleUploadedFile(name, content.encode()), "processing_mode": "TRANSACTION"}
    if mapping is not None:
        body["mapping"] = json.dumps(mapping) if isinstance(mapping, dict) else mapping
    return api.post(f"/api/accounts/{account_id}/staging-entries/files/", body, format="multipart")


@pytest.mark.django_db(transaction=True)
def test_a_mapped_export_imports_with_signed_amounts_and_extra_columns(ledger, operator_api):
    response = upload(operator_api, ledger.payments.pk, EXPORT, MAPPING)
    assert response.status_code == 202, response.json()
    drain()
    job = reload(Job.objects.get(pk=response.json()["job_id"]))
    assert job.state == "COMPLETED", job.error
    result = job.result
    assert (result["successful_ingestions"], result["failed_ingestions"]) == (3, 1)
    (error,) = result["errors"]
    assert error["row_number"] == 3 and "amount 'abc' is not a number" in error["error_details"]
    assert "is not a date as %d.%m.%Y" in error["error_details"]
    entries = {e.metadata["order_id"]: e for e in StagingEntry.objects.filter(account=ledger.payments)}
    one, two = entries["ORD-1"], entries["ORD-2"]
    assert (str(one.amount), one.entry_type, one.currency, one.effective_date.date().isoformat()) == (
        "1234.5000",
        "DEBIT",
        "USD",
        "2026-11-01",
    )
    assert (str(two.amount), two.entry_type) == ("20.0000", "CREDIT")  # negative: a Refund on DEBIT_NORMAL
    kept = {"order_id": "ORD-1", "source_file": "export.txt", "Payout ID": "po_9", "Fee": "0,30"}
    assert {k: one.metadata.get(k) for k in kept} == kept and "Net" not in one.metadata
    assert entries["ORD-4"].metadata["Payout ID"] == ""


@pytest.mark.django_db(transaction=True)
def test_default_columns_keep_extra_columns_in_the_metadata(ledger):
    content = "order_id,amount,currency,transaction_date,type,channel\na,1.00,USD,2026-11-01,Payment,web\n"
    job = uploads.file_import_start(
        account=ledger.payments,
        file=SimpleUploadedFile("a.csv", content.encode()),
        name="a.csv",
        processing_mode="TRANSACTION",
    )
    drain()
    assert reload(job).state == "COMPLETED"
    metadata = StagingEntry.objects.get().metadata
    assert {k: metadata[k] for k in ("order_id", "source_file", "channel")} == {
        "order_id": "a",
        "source_file": "a.csv",
        "channel": "web",
    }
    assert "amount" not in metadata


@pytest.mark.django_db
@pytest.mark.parametrize(
    "mapping,where",
    [
        ("{not json", "mapping"),
        ({"order_id": "Nope", **{k: v for k, v in MAPPING.items() if k != "order_id"}}, None),
        ({"amount": ""}, "mapping"),
        ({"colour": "x"}, "mapping"),
        ({"decimal_separator": ";"}, "mapping"),
        ({"delimiter": ";;"}, "mapping"),
        ({"date_format": "no date"}, "mapping"),
    ],
)
def test_bad_mappings_are_400_and_create_nothing(ledger, operator_api, mapping, where):
    response = upload(operator_api, ledger.payments.pk, EXPORT, mapping)
    assert response.status_code == 400, response.json()
    body = response.json()
    if where:
        assert "mapping" in body["details"]
    else:
        assert body["code"] == "invalid_csv" and body["details"]["missing"] == ["Nope"]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_a_mapping_is_refused_for_a_statement(ledger, operator_api):
    mt940 = ":20:X\n:25:A\n:28C:1\n:60F:C261101EUR0,00\n:62F:C261101EUR0,00\n-\n"
    response = upload(operator_api, ledger.bank.pk, mt940, {"order_id": "Reference"})
    assert response.status_code == 400 and "mapping" in response.json()["details"]


@pytest.mark.django_db(transaction=True)
def test_the_console_form_imports_with_a_mapping_and_remembers_it(ledger, staff_user):
    from django.test import Client

    client = Client()
    client.force_login(staff_user)
    url = f"/admin/recon/account/{ledger.payments.pk}/import-csv/"
    textarea = re.compile(r'<textarea name="mapping"[^>]*>(.*?)</textarea>', re.S)
    assert textarea.search(client.get(url).content.decode())[1].strip() == ""
    response = client.post(
        url,
        {
            "file": SimpleUploadedFile("e.txt", EXPORT.encode()),
            "processing_mode": "TRANSACTION",
            "mapping": json.dumps(MAPPING),
        },
    )
    assert response.status_code == 302, response.content[:2000]
    assert Job.objects.get().params["mapping"] == MAPPING
    offered = html.unescape(textarea.search(client.get(url).content.decode())[1])
    assert json.loads(offered) == MAPPING  # offered again
    bad = client.post(
        url,
        {
            "file": SimpleUploadedFile("e.txt", EXPORT.encode()),
            "processing_mode": "TRANSACTION",
            "mapping": "[1]",
            "force": "on",
        },
    )
    assert bad.status_code == 200 and Job.objects.count() == 1
