"""Hostile-input corpus for the API and the CSV import (issue 17, reliability suite): NUL, lone surrogates,
deep nesting, huge numbers, long keys, invalid UTF-8, huge fields, formula-like text, in every field of every
request body (fields read from the OpenAPI schema), every query parameter and every path parameter, and in
CSV files. Asserts: no 5xx, every refusal in the error shape with no traceback, NUL and surrogates never
stored, formula-like text stored as text; every CSV upload is a 202 whose job COMPLETES with each row counted
once (imported or a row error) or a 400 at the door."""

import json
import urllib.parse
from collections import Counter

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from drf_spectacular.generators import SchemaGenerator

from jobs.models import Job
from recon.models import StagingEntry
from tests.conftest import client_for
from tests.jobs.conftest import drain
from tests.reliability.world import World

pytestmark = pytest.mark.django_db(transaction=True)

DEEP = 200
VALUES = {
    "nul": "a\u0000b",
    "surrogate": "\ud800",
    "low_surrogate": "x\udfff",
    "long": "x" * 300,
    "huge_field": "h" * (1 << 20),
    "huge_int": 10**40,
    "negative_huge": -(10**40),
    "huge_exp": "1e999999",
    "float": 1.5,
    "bool": True,
    "null": None,
    "list": [1, 2],
    "object": {"a": 1},
    "deep": json.loads("[" * DEEP + "]" * DEEP),
    "long_key": {"k" * 10_000: 1},
    "formula": "=cmd|' /C calc'!A0",
    "path": "../../etc/passwd",
    "html": "<script>alert(1)</script>",
    "sql": "' OR 1=1 --",
    "arabic_digits": "\u0663\u0664",
    "emoji": "\U0001f642",
    "empty": "",
}
HEAVY = {"huge_field", "deep", "long_key"}
QUERY_VALUES = (
    "nul",
    "surrogate",
    "long",
    "huge_int",
    "negative_huge",
    "float",
    "formula",
    "sql",
    "emoji",
    "arabic_digits",
    "empty",
)
RAW_BODIES = {
    "invalid_utf8": b'{"a": "\xff\xfe"}',
    "not_json": b"{nope",
    "array": b"[]",
    "string": b'"x"',
    "number": b"1",
    "deep_100k": b"[" * 100_000 + b"]" * 100_000,
    "nul_raw": b'{"a": "\x00"}',
}


def _encode(value) -> bytes:
    return json.dumps(value, ensure_ascii=True, default=str).encode()


def _check(resp, label: str, problems: list, counts: Counter) -> None:
    counts[resp.status_code] += 1
    body = b"" if getattr(resp, "streaming", False) else resp.content
    if resp.status_code >= 500:
        problems.append(f"{label}: {resp.status_code} {body[:200]!r}")
    elif resp.status_code >= 400:
        try:
            shape = json.loads(body)
        except ValueError:
            problems.append(f"{label}: {resp.status_code} not JSON {body[:120]!r}")
            return
        if set(shape) != {"error", "code", "details"} or "Traceback" in body.decode("utf-8", "replace"):
            problems.append(f"{label}: {resp.status_code} bad error shape {body[:160]!r}")
    if getattr(resp, "streaming", False):
        resp.close()


def _operations():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {})
            fields = []
            for content in body.values():
                ref = content["schema"].get("$ref", "")
                props = schema["components"]["schemas"].get(ref.split("/")[-1], {}).get("properties", {})
                fields += [name for name, spec in props.items() if not spec.get("readOnly")]
            queries = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
            yield method.upper(), path, sorted(set(fields)), queries


def test_hostile_api_input_corpus():
    world = World("hostile")
    counts: Counter = Counter()
    problems: list[str] = []
    cases = 0
    for who in (world.staff, world.operator):
        client = client_for(who)
        for method, template, fields, queries in _operations():
            if template.endswith("/events/") or template.endswith("/files/"):
                continue  # a stream, and the multipart upload (the CSV corpus below)
            path = world.path(template)
            if method in ("POST", "PUT", "PATCH"):
                for field in [*fields, "metadata", "params"] if who is world.staff else ["metadata"]:
                    for name, value in VALUES.items():
                        if name in HEAVY and field not in (fields[:1] + ["metadata"]):
                            continue  # the big values once per operation: they test the parser, not the field
                        resp = client.generic(method, path, _encode({field: value}), content_type="application/json")
                        _check(resp, f"{method} {template} {field}={name}", problems, counts)
                        cases += 1
                for name, raw in RAW_BODIES.items():
                    resp = client.generic(method, path, raw, content_type="application/json")
                    _check(resp, f"{method} {template} body={name}", problems, counts)
                    cases += 1
            if method == "GET" and who is world.staff:
                for param in [*queries, "page", "page_size", "status"]:
                    for name in QUERY_VALUES:
                        value = VALUES[name]
                        query = urllib.parse.urlencode({param: str(value)}, encoding="utf-8", errors="surrogatepass")
                        resp = client.get(f"{path}?{query}")
                        _check(resp, f"GET {template}?{param}={name}", problems, counts)
                        cases += 1
            for part in [p.split("}")[0] for p in template.split("{")[1:]] if who is world.staff else []:
                for name in ("nul", "surrogate", "long", "path", "sql", "emoji", "arabic_digits"):
                    bad = urllib.parse.quote(str(VALUES[name]).replace("/", "%2F"), safe="%", errors="surrogatepass")
                    bad_path = path.replace(world.params[part], bad, 1)
                    resp = client.generic(
                        method, bad_path, b"{}" if method != "GET" else "", content_type="application/json"
                    )
                    _check(resp, f"{method} {template} {{{part}}}={name}", problems, counts)
                    cases += 1
    # Bad Host and an unknown path, without credentials.
    _check(Client(HTTP_HOST="evil.example").get("/api/merchants/"), "bad host", problems, counts)
    _check(Client().get("/api/\u00e9\u0000/"), "unknown path", problems, counts)
    with connection.cursor() as cursor:  # nothing unstorable slipped through a service into the ledger
        cursor.execute("SELECT count(*) FROM recon_stagingentry WHERE metadata::text LIKE '%%\\\\u0000%%'")
        nul_rows = cursor.fetchone()[0]
    print(f"\nhostile API corpus: {cases} cases, statuses {dict(sorted(counts.items()))}, failures {len(problems)}")
    assert nul_rows == 0
    assert not problems, "\n".join(problems[:50])
    assert cases > 1500


HEADER = b"order_id,amount,currency,transaction_date,type\r\n"
GOOD = b"ok-%d,10.00,USD,2026-11-01,Payment\r\n"
# name: (file bytes, data rows, rows that must import)
FILES = {
    "nul": (HEADER + GOOD % 1 + b"n\x00ul,1.00,USD,2026-11-01,Payment\r\n" + GOOD % 2, 3, 2),
    "invalid_utf8": (
        HEADER
        + GOOD % 1
        + b"\xff\xfe,1.00,USD,2026-11-01,Payment\r\n"
        + b"ok,\xc3(,USD,2026-11-01,Payment\r\n"
        + GOOD % 2,
        4,
        2,
    ),
    "huge_field": (HEADER + GOOD % 1 + b"big," + b"9" * (200 * 1024) + b",USD,2026-11-01,Payment\r\n" + GOOD % 2, 3, 2),
    "formula": (
        HEADER + b"\"=cmd|' /C calc'!A0\",1.00,USD,2026-11-01,Payment\r\n+SUM(A1),2.00,USD,2026-11-01,Payment\r\n"
        b"@x,3.00,USD,2026-11-01,Payment\r\n-2+3,4.00,USD,2026-11-01,Payment\r\n",
        4,
        4,
    ),
    "huge_numbers": (
        HEADER + b"a,1" + b"0" * 400 + b",USD,2026-11-01,Payment\r\nb,1e999999,USD,2026-11-01,Payment\r\n"
        b"c,-5,USD,2026-11-01,Payment\r\n" + GOOD % 1,
        4,
        1,
    ),
    "long_order_id": (HEADER + b"x" * 10_000 + b",1.00,USD,2026-11-01,Payment\r\n" + GOOD % 1, 2, 1),
    "surrogate_text": (
        HEADER + "\ud800,1.00,USD,2026-11-01,Payment\r\n".encode("utf-8", "surrogatepass") + GOOD % 1,
        2,
        1,
    ),
    "unterminated_quote": (HEADER + GOOD % 1 + b'"open,1.00,USD,2026-11-01,Payment\r\n', 2, 1),
    "bom_crlf": (b"\xef\xbb\xbf" + HEADER + GOOD % 1 + GOOD % 2, 2, 2),
    "many_columns": (HEADER + b",".join([b"c"] * 10_000) + b"\r\n" + GOOD % 1, 2, 1),
    "header_only": (HEADER, 0, 0),
}
REFUSED = {"empty": b"", "binary": bytes(range(256)) * 40, "no_header": GOOD % 1}


def test_hostile_csv_corpus(ledger, operator):
    from tests.conftest import client_for as api_for

    api = api_for(operator)
    path = f"/api/accounts/{ledger.payments.pk}/staging-entries/files/"
    figures = Counter()
    problems = []
    for name, (content, rows, good) in FILES.items():
        before = StagingEntry.objects.count()
        resp = api.post(
            f"{path}?force=true",
            {"file": SimpleUploadedFile(f"{name}.csv", content), "processing_mode": "TRANSACTION"},
            format="multipart",
        )
        figures[resp.status_code] += 1
        if resp.status_code != 202:
            problems.append(f"{name}: upload answered {resp.status_code} {resp.content[:200]!r}")
            continue
        drain(30)
        job = Job.objects.get(pk=resp.json()["job_id"])
        if job.state != "COMPLETED":
            problems.append(f"{name}: job {job.state} {job.error[:200]}")
            continue
        report = job.result
        imported = StagingEntry.objects.count() - before
        if (report["successful_ingestions"], report["failed_ingestions"], imported) != (good, rows - good, good):
            problems.append(
                f"{name}: report {report['successful_ingestions']}/{report['failed_ingestions']}, "
                f"{imported} imported; expected {good}/{rows - good}"
            )
        figures["rows"] += rows
        figures["row_errors"] += report["failed_ingestions"]
    for name, content in REFUSED.items():
        resp = api.post(
            path,
            {"file": SimpleUploadedFile(f"{name}.csv", content), "processing_mode": "TRANSACTION"},
            format="multipart",
        )
        figures[resp.status_code] += 1
        if resp.status_code != 400 or resp.json()["code"] not in (
            "invalid_csv",
            "validation_error",
            "unsupported_format",
        ):
            problems.append(f"{name}: {resp.status_code} {resp.content[:200]!r}")
    for bad_name in (b"a\x00.csv", b"\xed\xa0\x80.csv", b"\xff.csv", b"=cmd|calc.csv"):
        body = (
            b'--BoUnDaRy\r\nContent-Disposition: form-data; name="processing_mode"\r\n\r\nTRANSACTION\r\n'
            b'--BoUnDaRy\r\nContent-Disposition: form-data; name="file"; filename="' + bad_name + b'"\r\n'
            b"Content-Type: text/csv\r\n\r\n" + HEADER + GOOD % 9 + b"\r\n--BoUnDaRy--\r\n"
        )
        resp = api.generic("POST", f"{path}?force=true", body, content_type="multipart/form-data; boundary=BoUnDaRy")
        figures[resp.status_code] += 1
        if resp.status_code >= 500:
            problems.append(f"file name {bad_name!r}: {resp.status_code}")
    stored = set(StagingEntry.objects.values_list("metadata__order_id", flat=True))
    assert {"=cmd|' /C calc'!A0", "+SUM(A1)", "@x", "-2+3"} <= stored  # formula-like text stays text
    print(
        f"\nhostile CSV corpus: {len(FILES) + len(REFUSED) + 4} files, {figures['rows']} rows, "
        f"{figures['row_errors']} row errors, statuses {{202: {figures[202]}, 400: {figures[400]}}}, "
        f"failures {len(problems)}"
    )
    assert not problems, "\n".join(problems)
