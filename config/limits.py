"""Request-body limits, enforced while the body is read, under WSGI and ASGI, before anything is stored
(issue 17, item 2; docs/operations.md, "Limits").

Before a byte of the body is read:
- a declared `Content-Length` above the path's limit answers 413;
- a body above settings.UNAUTHENTICATED_BODY_MAX_BYTES, or of unknown length (chunked), is read only when the
  request carries valid credentials (a DRF token, or a session of an active user): otherwise 401. So a 1 GiB
  body without a token never touches the disk.
While it is read (the only check a chunked body gets), the count stops at the limit with a 413. The limit is
settings.UPLOAD_MAX_BYTES (plus multipart slack) on the upload paths and settings.REQUEST_MAX_BYTES elsewhere.

Django's ASGI handler spools the whole body into a temporary file before any middleware runs, and its
multipart parser ignores a body without `Content-Length` (a chunked upload looked empty: 400 "No file was
submitted"); `LimitedASGIHandler` counts while it spools and then declares the length it read. Under WSGI the
declared length bounds what Django reads; a chunked body (servers that pass `wsgi.input_terminated`) is read
through the same counter into a spooled file first."""

import json
import re
import tempfile

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler

MULTIPART_SLACK = 64 * 1024  # boundaries and the other form fields, on top of the file's bytes
UPLOAD_PATHS = (
    re.compile(r"^/api/accounts/[^/]+/staging-entries/files/?$"),
    re.compile(r"^/admin/recon/account/[^/]+/import-csv/?$"),
)
READ_CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    def __init__(self, limit: int, size: int | None = None):
        self.limit, self.size = limit, size
        super().__init__(f"The request body is larger than the limit of {limit} bytes.")


def body_limit(path: str) -> int:
    if any(p.match(path) for p in UPLOAD_PATHS):
        return int(settings.UPLOAD_MAX_BYTES) + MULTIPART_SLACK
    return int(settings.REQUEST_MAX_BYTES)


def error_body(path: str, status: int, message: str, code: str, details: dict | None = None) -> tuple[bytes, str]:
    """The API's error shape under /api/ (shared/API.md, "Errors"), plain text elsewhere."""
    if path.startswith("/api/") or path == "/api":
        return (json.dumps({"error": message, "code": code, "details": details or {}}).encode(),
                "application/json")
    return f"{status} {message}\n".encode(), "text/plain; charset=utf-8"


def too_large(path: str, exc: BodyTooLarge) -> tuple[int, bytes, str]:
    details = {"max_bytes": exc.limit, **({"size": exc.size} if exc.size is not None else {})}
    return (413, *error_body(path, 413, str(exc), "payload_too_large", details))


def _credentials_valid(authorization: str, session_key: str) -> bool:
    """Whether the request's token or session belongs to an active user (database look-ups, sync)."""
    from django.contrib.auth import SESSION_KEY, get_user_model
    from rest_framework.authtoken.models import Token

    parts = authorization.split()
    if len(parts) == 2 and parts[0].lower() == "token":
        return Token.objects.filter(key=parts[1][:40], user__is_active=True).exists()
    if session_key:
        from importlib import import_module

        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key[:100])
        user_id = store.get(SESSION_KEY)
        return user_id is not None and get_user_model().objects.filter(pk=user_id, is_active=True).exists()
    return False


def precheck(path: str, content_length: str | None, chunked: bool, authorization: str, cookies: str
             ) -> tuple[int, bytes, str] | None:
    """A refusal (status, body, content type) decided before the body is read, or None to go on reading."""
    limit = body_limit(path)
    try:
        length = int(content_length) if content_length not in (None, "") else None
    except ValueError:
        return (400, *error_body(path, 400, "Malformed Content-Length header.", "validation_error"))
    if length is not None and length > limit:
        return too_large(path, BodyTooLarge(limit, length))
    if length is None and not chunked or length is not None and length <= settings.UNAUTHENTICATED_BODY_MAX_BYTES:
        return None
    session_key = ""
    for part in cookies.split(";"):
        name, _, value = part.strip().partition("=")
        if name == settings.SESSION_COOKIE_NAME:
            session_key = value
    if _credentials_valid(authorization, session_key):
        return None
    return (401, *error_body(path, 401, "Authentication credentials were not provided (a request body above "
                             f"{settings.UNAUTHENTICATED_BODY_MAX_BYTES} bytes needs them before it is read).",
                             "not_authenticated"))


# --- ASGI ---------------------------------------------------------------------------------------------

class LimitedASGIHandler(ASGIHandler):
    """Django's ASGI handler with the body limits above (see the module docstring)."""

    async def handle(self, scope, receive, send):
        path = scope.get("path", "")
        headers = {k.decode("latin1").lower(): v.decode("latin1") for k, v in scope.get("headers", [])}
        refusal = await sync_to_async(precheck)(
            path, headers.get("content-length"), "chunked" in headers.get("transfer-encoding", "").lower(),
            headers.get("authorization", ""), headers.get("cookie", ""))
        if refusal is not None:
            await self._refuse(send, *refusal)
            return
        limited = _CountingReceive(receive, body_limit(path))
        try:
            await super().handle(scope, limited, send)
        except BodyTooLarge as exc:
            await self._refuse(send, *too_large(path, exc))

    async def read_body(self, receive):
        """Django's spooling read, counting against the limit (BodyTooLarge) and closing the file on any error."""
        body_file = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise RequestAborted()
                if message.get("body"):
                    if getattr(body_file, "_rolled", False):
                        await sync_to_async(body_file.write, thread_sensitive=False)(message["body"])
                    else:
                        body_file.write(message["body"])
                if not message.get("more_body", False):
                    break
        except BaseException:
            body_file.close()
            raise
        body_file.seek(0)
        return body_file

    def create_request(self, scope, body_file):
        """Declares the length of a body that came without Content-Length (chunked), so the parsers read it."""
        names = {k.lower() for k, _ in scope.get("headers", [])}
        if b"content-length" not in names:
            size = body_file.seek(0, 2)
            body_file.seek(0)
            if size:
                scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", [])
                                              if k.lower() != b"transfer-encoding"]
                         + [(b"content-length", str(size).encode())]}
        return super().create_request(scope, body_file)

    @staticmethod
    async def _refuse(send, status: int, body: bytes, content_type: str) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _CountingReceive:
    def __init__(self, receive, limit: int):
        self.receive, self.limit, self.total = receive, limit, 0

    async def __call__(self):
        message = await self.receive()
        if message.get("type") == "http.request":
            self.total += len(message.get("body", b""))
            if self.total > self.limit:
                raise BodyTooLarge(self.limit)
        return message


# --- WSGI ---------------------------------------------------------------------------------------------

class LimitedWSGIHandler(WSGIHandler):
    """Django's WSGI handler with the body limits above (see the module docstring)."""

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        refusal = precheck(path, environ.get("CONTENT_LENGTH"), chunked, environ.get("HTTP_AUTHORIZATION", ""),
                           environ.get("HTTP_COOKIE", ""))
        if refusal is None and chunked and not environ.get("CONTENT_LENGTH"):
            try:
                environ = self._spool_chunked(environ, body_limit(path))
            except BodyTooLarge as exc:
                refusal = too_large(path, exc)
        if refusal is not None:
            status, body, content_type = refusal
            start_response(f"{status} {'Payload Too Large' if status == 413 else 'Refused'}",
                           [("Content-Type", content_type), ("Content-Length", str(len(body))),
                            ("Connection", "close")])
            return [body]
        return super().__call__(environ, start_response)

    @staticmethod
    def _spool_chunked(environ, limit: int) -> dict:
        """Reads a chunked body (the server de-chunks it) through the counter; a server that cannot say where
        such a body ends (no `wsgi.input_terminated`) gets it as empty, as before."""
        if not environ.get("wsgi.input_terminated"):
            return environ
        spool = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
        total = 0
        while data := environ["wsgi.input"].read(READ_CHUNK):
            total += len(data)
            if total > limit:
                spool.close()
                raise BodyTooLarge(limit)
            spool.write(data)
        spool.seek(0)
        return {**environ, "wsgi.input": spool, "CONTENT_LENGTH": str(total)}
