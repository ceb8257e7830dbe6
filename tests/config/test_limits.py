"""Request-body limits (issue 17, item 2): enforced before and while the body is read, under WSGI (in process,
Django's real handler) and ASGI (a real uvicorn); credentials checked before a large body is read."""

import http.client
import io
import json
import os
import socket
import sys
import time
from wsgiref.util import setup_testing_defaults

import pytest
from django.core import signals
from django.db import close_old_connections

from config.limits import LimitedWSGIHandler
from jobs.models import Job
from recon.models import Upload
from tests.conftest import wait_until

CSV = b"order_id,amount,currency,transaction_date,type\nA-1,10.00,USD,2026-11-01,Payment\n"


class Body(io.RawIOBase):
    """A request body of `size` bytes made on the fly, counting what the server read."""

    def __init__(self, size: int, head: bytes = b""):
        self.size, self.head, self.read_bytes = size, head, 0

    def readable(self):
        return True

    def readinto(self, target):
        n = min(len(target), self.size - self.read_bytes)
        if n <= 0:
            return 0
        chunk = (self.head + b"x" * n)[self.read_bytes:self.read_bytes + n] if self.read_bytes < len(self.head) \
            else b"x" * n
        target[:n] = chunk[:n].ljust(n, b"x")
        self.read_bytes += n
        return n


@pytest.fixture
def wsgi(db):
    """Django's WSGI handler with the limits, as a server calls it (test-database connection kept)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    handler = LimitedWSGIHandler()

    def call(path: str, body, *, length: int | None, token: str = "", chunked: bool = False, ctype="text/plain"):
        environ = {"PATH_INFO": path, "REQUEST_METHOD": "POST", "CONTENT_TYPE": ctype, "wsgi.input": body}
        if length is not None:
            environ["CONTENT_LENGTH"] = str(length)
        if chunked:
            environ["HTTP_TRANSFER_ENCODING"] = "chunked"
            environ["wsgi.input_terminated"] = True
        if token:
            environ["HTTP_AUTHORIZATION"] = f"Token {token}"
        setup_testing_defaults(environ)
        environ["SERVER_NAME"] = environ["HTTP_HOST"] = "testserver"
        got = {}

        def start_response(status, headers, exc_info=None):
            got["status"], got["headers"] = int(status.split()[0]), dict(headers)

        content = b"".join(handler(environ, start_response))
        return got["status"], content

    yield call
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def _token(user) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=user)[0].key


def test_wsgi_refuses_a_declared_giant_body_before_reading_it(wsgi, ledger, operator):
    body = Body(1 << 30)
    status, content = wsgi(f"/api/accounts/{ledger.payments.pk}/staging-entries/files/", body, length=1 << 30,
                           token=_token(operator))
    assert status == 413 and json.loads(content)["code"] == "payload_too_large"
    assert body.read_bytes == 0
    assert not Upload.objects.exists()


def test_wsgi_reads_no_large_body_without_credentials(wsgi, ledger):
    for length, chunked in ((10 * 1024 * 1024, False), (None, True)):
        body = Body(10 * 1024 * 1024)
        status, content = wsgi(f"/api/accounts/{ledger.payments.pk}/staging-entries/files/", body, length=length,
                               chunked=chunked, token="not-a-token")
        assert status == 401, content
        assert json.loads(content)["code"] == "not_authenticated"
        assert body.read_bytes == 0
    assert not Upload.objects.exists()


def test_wsgi_counts_a_chunked_body_while_reading(wsgi, ledger, operator, settings):
    settings.UPLOAD_MAX_BYTES = 256 * 1024
    body = Body(50 * 1024 * 1024)
    status, content = wsgi(f"/api/accounts/{ledger.payments.pk}/staging-entries/files/", body, length=None,
                           chunked=True, token=_token(operator))
    assert status == 413 and json.loads(content)["code"] == "payload_too_large"
    assert body.read_bytes <= 256 * 1024 + 64 * 1024 + 2 * 64 * 1024  # stopped at the limit, not at the end
    assert not Upload.objects.exists()


def _multipart(data: bytes, name: str = "a.csv") -> tuple[bytes, str]:
    boundary = "XyZbOuNdArY"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"processing_mode\"\r\n\r\nTRANSACTION\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: text/csv\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_wsgi_chunked_upload_within_the_limit_is_imported(wsgi, ledger, operator):
    body, ctype = _multipart(CSV + b"".join(f"B-{i},1.00,USD,2026-11-01,Payment\n".encode() for i in range(3000)))
    status, content = wsgi(f"/api/accounts/{ledger.payments.pk}/staging-entries/files/", io.BytesIO(body),
                           length=None, chunked=True, token=_token(operator), ctype=ctype)
    assert status == 202, content
    assert Job.objects.filter(pk=json.loads(content)["job_id"]).exists()


def test_wsgi_small_bodies_need_no_precheck(wsgi, ledger):
    status, content = wsgi("/api/merchants/", io.BytesIO(b"{}"), length=2, ctype="application/json")
    assert status == 401 and json.loads(content)["code"] == "not_authenticated"


def test_other_bodies_have_the_general_limit(wsgi, staff_user, settings):
    settings.REQUEST_MAX_BYTES = 1024
    status, content = wsgi("/api/merchants/", Body(4096), length=4096, token=_token(staff_user),
                           ctype="application/json")
    assert status == 413 and json.loads(content)["details"]["max_bytes"] == 1024


# --- ASGI: a real uvicorn ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def uvicorn(processes, tmp_path, transactional_db):
    port = _free_port()
    spool = tmp_path / "tmp"
    spool.mkdir()
    processes.start(["-m", "uvicorn", "config.asgi:application", "--port", str(port), "--log-level", "warning"],
                    TMPDIR=str(spool), UPLOAD_MAX_BYTES=str(2 * 1024 * 1024))

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_until(up, timeout=30, message="uvicorn listening")
    return type("Server", (), {"port": port, "spool": spool})


def _send_chunked(port: int, path: str, total: int, headers: dict, piece: int = 256 * 1024):
    """Streams `total` bytes chunked; returns (status, body, bytes sent before the server answered)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
    for k, v in {"Transfer-Encoding": "chunked", "Host": "localhost", **headers}.items():
        conn.putheader(k, v)
    conn.endheaders()
    sent = 0
    try:
        while sent < total:
            data = b"x" * min(piece, total - sent)
            conn.send(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            sent += len(data)
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    resp = conn.getresponse()
    return resp.status, resp.read(), sent


@pytest.mark.slow
def test_asgi_large_body_without_token_never_touches_the_disk(uvicorn, ledger):
    path = f"/api/accounts/{ledger.payments.pk}/staging-entries/files/"
    started = time.monotonic()
    status, body, _ = _send_chunked(uvicorn.port, path, 256 * 1024 * 1024, {"Content-Type": "text/csv"})
    assert status == 401 and json.loads(body)["code"] == "not_authenticated"
    assert list(uvicorn.spool.iterdir()) == []
    print(f"256 MiB chunked without a token: 401 after {time.monotonic() - started:.2f}s, nothing spooled")
    conn = http.client.HTTPConnection("127.0.0.1", uvicorn.port, timeout=30)
    conn.request("POST", path, body=b"", headers={"Content-Length": str(1 << 30)})
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["code"] == "payload_too_large"
    assert not Upload.objects.exists()


@pytest.mark.slow
def test_asgi_chunked_upload_gets_413_over_the_limit_and_202_within(uvicorn, ledger, operator):
    path = f"/api/accounts/{ledger.payments.pk}/staging-entries/files/"
    auth = {"Authorization": f"Token {_token(operator)}"}
    status, body, sent = _send_chunked(uvicorn.port, path, 64 * 1024 * 1024,
                                       {**auth, "Content-Type": "multipart/form-data; boundary=XyZbOuNdArY"})
    assert status == 413, body
    assert json.loads(body)["code"] == "payload_too_large"
    assert not Upload.objects.exists()
    data, ctype = _multipart(CSV)
    conn = http.client.HTTPConnection("127.0.0.1", uvicorn.port, timeout=30)
    conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
    for k, v in {**auth, "Transfer-Encoding": "chunked", "Content-Type": ctype, "Host": "localhost"}.items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 202, resp.read()
    assert Upload.objects.count() == 1
