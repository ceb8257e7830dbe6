"""Event streams against a real uvicorn: many SSE clients on raw asyncio sockets (HTTP/1.1, chunked bodies), and the
test database's connection count read from `pg_stat_activity` (this database only, so `pytest -n` works)."""

import asyncio
import json
import sys
import threading
import time
import urllib.request

import psycopg
from django.db import connection

from tests.reliability.server import start_uvicorn


class ConnectionCounter:
    """Counts the connections to the test database (`datname = current_database()`), other than its own, on a
    psycopg connection of its own (usable from any thread or event loop); `sample()` keeps the peak in a thread."""

    def __init__(self):
        s = connection.settings_dict
        self.conn = psycopg.connect(host=s["HOST"], port=s["PORT"], user=s["USER"], dbname=s["NAME"], autocommit=True)
        self._lock = threading.Lock()
        self.peak = 0
        self._stop = threading.Event()

    def count(self) -> int:
        with self._lock:
            return self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()[0]

    def sample(self):
        """A context manager: samples every 0.1 s while open; `peak` is the highest count seen."""
        counter = self

        class Sampler:
            def __enter__(self):
                counter.peak = counter.count()
                counter._stop.clear()
                self.thread = threading.Thread(target=self.run, daemon=True)
                self.thread.start()
                return counter

            def run(self):
                while not counter._stop.wait(0.1):
                    counter.peak = max(counter.peak, counter.count())

            def __exit__(self, *exc):
                counter._stop.set()
                self.thread.join(5)

        return Sampler()

    def close(self):
        self.conn.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def run_async(main):
    """`asyncio.run(main)` in a thread of its own: the browser tests' Playwright keeps an event loop running in the
    main thread for the whole session, where `asyncio.run` would refuse to start."""
    box = {}

    def target():
        try:
            box["result"] = asyncio.run(main)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


class SSEClient:
    """One event stream over a raw socket: `open()` sends the request and reads the status; `next_event()` returns
    (id, event, data) of the next event, skipping comments; None when the server closed the stream."""

    def __init__(self, port: int, path: str, token: str, last_event_id: int | None = None):
        self.port, self.path, self.token, self.last_event_id = port, path, token, last_event_id
        self.status = None
        self.body = b""
        self.events: list[tuple[int | None, str, dict]] = []
        self._buffer = b""

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        extra = f"Last-Event-ID: {self.last_event_id}\r\n" if self.last_event_id is not None else ""
        self.writer.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                f"Authorization: Token {self.token}\r\n{extra}\r\n"
            ).encode()
        )
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.chunked = b"transfer-encoding: chunked" in head.lower()
        if self.status != 200:
            length = [
                int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")
            ]
            self.body = await self.reader.readexactly(length[0]) if length else await self._chunk()
        return self

    async def _chunk(self) -> bytes:
        if not self.chunked:
            return await self.reader.read(65536)
        size = int((await self.reader.readline()).strip() or b"0", 16)
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def next_event(self):
        while True:
            while b"\n\n" in self._buffer:
                block, self._buffer = self._buffer.split(b"\n\n", 1)
                text = block.decode()
                if text.startswith(":"):
                    continue
                fields = dict(line.split(": ", 1) for line in text.splitlines())
                event = (int(fields["id"]) if "id" in fields else None, fields["event"], json.loads(fields["data"]))
                self.events.append(event)
                return event
            chunk = await self._chunk()
            if not chunk:
                return None
            self._buffer += chunk

    def close(self):
        self.writer.transport.abort()  # as a client that goes away does: no goodbye


async def open_many(port: int, path: str, token: str, n: int, batch: int = 50) -> list[SSEClient]:
    """Opens `n` streams, `batch` at a time, each up to its first event."""
    clients = []

    async def one():
        client = await SSEClient(port, path, token).open()
        assert client.status == 200, (client.status, client.body)
        await asyncio.wait_for(client.next_event(), 30)
        return client

    for start in range(0, n, batch):
        clients += await asyncio.gather(*(one() for _ in range(min(batch, n - start))))
    return clients


def api(url: str, method: str, path: str, token: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}{path}",
        method=method,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def flood(processes, staff_user, n: int) -> dict:
    """The whole scenario; returns its figures (and asserts as it goes):

    1. `n` streams of one waiting job open on one uvicorn worker (the per-user cap set to `n`); one more is 429.
    2. While they are open, the database has no more connections than before they opened, plus the hub's two.
    3. A signal and a cancel reach every stream, which then closes: each got the same events, with growing ids,
       exactly the stored ones after its first state.
    4. The `n` streams of a second job are dropped by the client at once; `n` new ones open at once (their slots
       came back) and the connection count is still flat."""
    from rest_framework.authtoken.models import Token

    from jobs import services
    from jobs.models import JobEvent
    from tests.jobs.conftest import drain

    token = Token.objects.get_or_create(user=staff_user)[0].key
    jobs = [services.job_create(job_type="jobs.approval_demo", params={}) for _ in range(2)]
    drain()
    base = start_uvicorn(
        processes, "--backlog", "4096", JOBS_STREAMS_PER_USER=n, JOBS_KEEPALIVE_SECONDS=5, JOBS_HUB_LINGER_SECONDS=0
    )
    port = int(base.rsplit(":", 1)[1])
    figures = {"streams": n}
    counter = ConnectionCounter()
    box = {}

    async def scenario():
        path = f"/api/jobs/{jobs[0].pk}/events/"
        baseline = counter.count()
        started = time.monotonic()
        with counter.sample():
            clients = await open_many(port, path, token, n)
        figures["open_seconds"] = round(time.monotonic() - started, 1)
        figures["peak_connections_while_opening"] = counter.peak
        assert all(c.events[0][1] == "state" and c.events[0][2]["state"] == "WAITING" for c in clients)
        extra = await SSEClient(port, path, token).open()
        assert extra.status == 429 and json.loads(extra.body)["code"] == "too_many_streams", extra.body
        await asyncio.sleep(1)
        held = counter.count()
        figures.update(baseline_connections=baseline, connections_with_streams_open=held)
        assert held <= baseline + 2, f"{held} connections with {n} streams open (baseline {baseline})"

        started = time.monotonic()
        await asyncio.to_thread(api, base, "POST", f"/api/jobs/{jobs[0].pk}/signal/", token, {"name": "approve"})
        await asyncio.to_thread(api, base, "POST", f"/api/jobs/{jobs[0].pk}/cancel/", token)

        async def rest(client):
            while await asyncio.wait_for(client.next_event(), 60) is not None:
                pass

        await asyncio.gather(*(rest(c) for c in clients))
        figures["fan_out_seconds"] = round(time.monotonic() - started, 2)
        box["received"] = [c.events for c in clients]
        for client in clients:
            client.close()

        # Dropped at once by the client, reopened at once: the slots and subscriptions were freed.
        path = f"/api/jobs/{jobs[1].pk}/events/"
        second = await open_many(port, path, token, n)
        for client in second:
            client.close()
        await asyncio.sleep(0.5)
        third = await open_many(port, path, token, n, batch=100)
        figures["reopened"] = len(third)
        await asyncio.sleep(1)
        figures["connections_after_reopening"] = counter.count()
        assert figures["connections_after_reopening"] <= baseline + 2
        for client in third:
            client.close()
        await asyncio.sleep(2)
        figures["connections_after_closing"] = counter.count()
        assert figures["connections_after_closing"] <= baseline + 2

    try:
        run_async(scenario())
    finally:
        counter.close()
    stored = list(JobEvent.objects.filter(job=jobs[0]).order_by("id").values_list("id", "kind", "data"))
    first_id = box["received"][0][0][0]
    expected = [e for e in stored if e[0] > first_id]
    assert expected[-1][2]["state"] == "CANCELLED"
    for events in box["received"]:
        assert events[1:] == expected
    print("event stream flood:", " ".join(f"{k}={v}" for k, v in figures.items()), file=sys.stderr)
    return figures
