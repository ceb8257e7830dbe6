"""The live event stream: SSE over a streaming response, read chunk by chunk as a browser would."""

import asyncio
import json
import threading

import pytest

from jobs import events, services
from tests.jobs.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def parse(chunk: bytes) -> tuple[str, dict | None]:
    text = chunk.decode()
    if text.startswith(":"):
        return "comment", None
    fields = dict(line.split(": ", 1) for line in text.strip().splitlines())
    return fields["event"], json.loads(fields["data"])


def test_stream_replays_the_state_then_follows_events_until_the_end(staff_api):
    job = services.job_create(job_type="jobs.countdown", params={"steps": 2, "step_seconds": 0})
    resp = staff_api.get(f"/api/jobs/{job.pk}/events/", HTTP_ACCEPT="text/event-stream")
    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/event-stream")
    assert resp["Cache-Control"] == "no-cache" and resp["X-Accel-Buffering"] == "no"
    chunks = iter(resp.streaming_content)
    kind, data = parse(next(chunks))
    assert kind == "state" and data["state"] == "CREATED" and data["progress"] == 0

    drain()  # the job runs to the end in this process; its events are now committed
    received = [parse(c) for c in chunks]  # ends by itself after the terminal state
    kinds = [k for k, _ in received]
    assert kinds[0] == "state" and received[0][1]["state"] == "RUNNING"
    assert "progress" in kinds and "log" in kinds
    assert received[-1] == ("state", received[-1][1]) and received[-1][1]["state"] == "COMPLETED"
    assert [d["progress"] for k, d in received if k == "progress"] == [50, 100]
    assert [d["message"] for k, d in received if k == "log"][-2:] == ["step 1 of 2", "step 2 of 2"]


def test_stream_of_a_finished_job_sends_one_state_event_and_closes(staff_api):
    job = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    services.job_cancel(job_id=job.pk, by=None)
    resp = staff_api.get(f"/api/jobs/{job.pk}/events")
    chunks = [parse(c) for c in resp.streaming_content]
    assert len(chunks) == 1 and chunks[0][0] == "state" and chunks[0][1]["state"] == "CANCELLED"


def test_stream_sends_keep_alives_when_idle_and_wakes_on_notify(staff_api, settings):
    settings.JOBS = {"KEEPALIVE_SECONDS": 0.3}
    job = services.job_create(job_type="jobs.approval_demo", params={})
    drain()
    resp = staff_api.get(f"/api/jobs/{job.pk}/events/")
    chunks = iter(resp.streaming_content)
    kind, data = parse(next(chunks))
    assert kind == "state" and data["state"] == "WAITING" and data["waiting_for"] == ["approve", "reject"]
    assert parse(next(chunks)) == ("comment", None)

    # A change committed by another connection while the stream waits on LISTEN.
    def send():
        from django.db import connections

        services.job_signal(job_id=job.pk, name="approve", by=None)
        connections.close_all()

    timer = threading.Timer(0.1, send)
    timer.start()
    got = []
    while len(got) < 2:
        kind, data = parse(next(chunks))
        if kind != "comment":
            got.append((kind, data))
    timer.join()
    resp.close()  # the client goes away: the generator closes its LISTEN connection
    assert got[0][0] == "log" and "approve" in got[0][1]["message"]
    assert got[1][0] == "state" and got[1][1]["state"] == "RUNNING"


def test_streams_of_a_process_share_one_listen_connection(staff_api):
    from django.db import connection

    jobs = [services.job_create(job_type="jobs.approval_demo", params={}) for _ in range(3)]
    drain()
    responses = [staff_api.get(f"/api/jobs/{job.pk}/events/") for job in jobs]
    streams = [iter(r.streaming_content) for r in responses]
    assert [parse(next(s))[1]["state"] for s in streams] == ["WAITING"] * 3
    with connection.cursor() as cursor:
        # This test database's connections only, so other test processes (pytest -n) do not count.
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN \"job_events\"'"
                       " AND datname = current_database()")
        assert cursor.fetchone()[0] == 1
    for job in jobs:
        services.job_signal(job_id=job.pk, name="reject", by=None)
    for stream in streams:
        kinds = []
        while "state" not in kinds:
            kinds.append(parse(next(stream))[0])
        assert kinds == ["log", "state"]
    for r in responses:
        r.close()


def test_async_stream_for_asgi_yields_the_same_events():
    job = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    services.job_cancel(job_id=job.pk, by=None)

    async def collect():
        return [chunk async for chunk in events.astream(job.pk)]

    chunks = asyncio.run(collect())
    assert [parse(c)[1]["state"] for c in chunks] == ["CANCELLED"]


def test_stream_under_asgi_streams_without_buffering(staff_user, monkeypatch):
    """Through Django's ASGI handler: the first event arrives while the job is still waiting."""
    from django.db import connection

    # Django runs the view in asgiref's thread: let it close its connection when the request finishes.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    from asgiref.testing import ApplicationCommunicator
    from rest_framework.authtoken.models import Token

    from config.asgi import application

    token, _ = Token.objects.get_or_create(user=staff_user)
    job = services.job_create(job_type="jobs.approval_demo", params={})
    drain()

    async def first_chunks():
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
                 "path": f"/api/jobs/{job.pk}/events/", "raw_path": f"/api/jobs/{job.pk}/events/".encode(),
                 "query_string": b"", "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
                 "headers": [(b"host", b"testserver"), (b"accept", b"text/event-stream"),
                             (b"authorization", f"Token {token.key}".encode())]}
        comm = ApplicationCommunicator(application, scope)
        await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await comm.receive_output(timeout=10)
        body = await comm.receive_output(timeout=10)
        await comm.send_input({"type": "http.disconnect"})
        try:
            await comm.wait(timeout=5)
        except Exception:
            pass
        return start, body

    start, body = asyncio.run(first_chunks())
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream") in [(k.lower(), v) for k, v in start["headers"]]
    kind, data = parse(body["body"])
    assert kind == "state" and data["state"] == "WAITING"
    assert body.get("more_body") is True
    # The client went away: the stream's thread stops and closes its connections.
    from tests.conftest import wait_until

    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("sse-")], 10,
               message="the stream thread to stop")


def test_stream_is_woken_by_notify_not_by_its_keepalive_timer(staff_api, settings):
    import time

    settings.JOBS = {"KEEPALIVE_SECONDS": 20}
    job = services.job_create(job_type="jobs.approval_demo", params={})
    drain()
    resp = staff_api.get(f"/api/jobs/{job.pk}/events/")
    chunks = iter(resp.streaming_content)
    assert parse(next(chunks))[0] == "state"

    def send():
        from django.db import connections

        services.job_signal(job_id=job.pk, name="approve", by=None)
        connections.close_all()

    threading.Timer(0.5, send).start()
    started = time.monotonic()
    kind, data = parse(next(chunks))  # blocks in the stream until the NOTIFY arrives
    assert kind == "log" and "approve" in data["message"]
    assert time.monotonic() - started < 5
    resp.close()
