"""The live event stream: SSE over a streaming response, read chunk by chunk as a browser would."""

import json
import threading

import pytest

from jobs import events, services
from tests.jobs.conftest import drain
from tests.jobs.streamflood import run_async

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

    from tests.conftest import wait_until

    def listening() -> int:
        # This test database's connections only, so other test processes (pytest -n) do not count.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN \"job_events\"'"
                " AND datname = current_database()"
            )
            return cursor.fetchone()[0]

    jobs = [services.job_create(job_type="jobs.approval_demo", params={}) for _ in range(3)]
    drain()
    responses = [staff_api.get(f"/api/jobs/{job.pk}/events/") for job in jobs]
    try:
        streams = [iter(r.streaming_content) for r in responses]
        assert [parse(next(s))[1]["state"] for s in streams] == ["WAITING"] * 3
        # The replay is served while the listener may still be connecting: wait for it, then it must be the only one.
        wait_until(listening, 10, message="the hub's LISTEN connection")
        assert listening() == 1
        for job in jobs:
            services.job_signal(job_id=job.pk, name="reject", by=None)
        for stream in streams:
            kinds = []
            while "state" not in kinds:
                kinds.append(parse(next(stream))[0])
            assert kinds == ["log", "state"]
    finally:
        for r in responses:
            r.close()


def test_async_stream_for_asgi_yields_the_same_events():
    job = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    services.job_cancel(job_id=job.pk, by=None)

    async def collect():
        return [chunk async for chunk in events.astream(job.pk)]

    chunks = run_async(collect())
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
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/api/jobs/{job.pk}/events/",
            "raw_path": f"/api/jobs/{job.pk}/events/".encode(),
            "query_string": b"",
            "root_path": "",
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 1),
            "headers": [
                (b"host", b"testserver"),
                (b"accept", b"text/event-stream"),
                (b"authorization", f"Token {token.key}".encode()),
            ],
        }
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

    start, body = run_async(first_chunks())
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream") in [(k.lower(), v) for k, v in start["headers"]]
    kind, data = parse(body["body"])
    assert kind == "state" and data["state"] == "WAITING"
    assert body.get("more_body") is True
    # The client went away: its subscription is gone at once (no thread or connection of its own).
    from tests.conftest import wait_until

    wait_until(lambda: events.hub.open_streams == 0, 10, message="the stream to close")


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


def parse_all(chunks) -> list[tuple[int | None, str, dict | None]]:
    """(id, event, data) of each chunk; comments as (None, "comment", None)."""
    out = []
    for chunk in chunks:
        text = chunk.decode()
        if text.startswith(":"):
            out.append((None, "comment", None))
            continue
        fields = dict(line.split(": ", 1) for line in text.strip().splitlines())
        out.append((int(fields["id"]) if "id" in fields else None, fields["event"], json.loads(fields["data"])))
    return out


def stored(job) -> list[tuple[int, str, dict]]:
    from jobs.models import JobEvent

    return list(JobEvent.objects.filter(job=job).order_by("id").values_list("id", "kind", "data"))


def test_every_event_carries_its_id_and_a_reconnect_replays_exactly_what_was_missed(staff_api):
    job = services.job_create(job_type="jobs.countdown", params={"steps": 4, "step_seconds": 0})
    drain()
    events_ = stored(job)
    assert len(events_) >= 10 and events_[-1][2]["state"] == "COMPLETED"
    # A fresh client of a finished job: its state, with the id of the last stored event.
    fresh = parse_all(staff_api.get(f"/api/jobs/{job.pk}/events/").streaming_content)
    assert fresh == [(events_[-1][0], "state", fresh[0][2])] and fresh[0][2]["state"] == "COMPLETED"
    # Reconnecting after the 3rd event (header, as EventSource does): every stored event after it, once, in order.
    cut = events_[2][0]
    replay = parse_all(staff_api.get(f"/api/jobs/{job.pk}/events/", HTTP_LAST_EVENT_ID=str(cut)).streaming_content)
    assert replay == [(i, k, d) for i, k, d in events_ if i > cut]
    # The same with the query parameter; the header wins when both are sent.
    by_param = parse_all(staff_api.get(f"/api/jobs/{job.pk}/events/?last_event_id={cut}").streaming_content)
    assert by_param == replay
    both = parse_all(
        staff_api.get(
            f"/api/jobs/{job.pk}/events/?last_event_id=0", HTTP_LAST_EVENT_ID=str(events_[-2][0])
        ).streaming_content
    )
    assert both == [events_[-1]]
    # From 0: the whole stored log.
    everything = parse_all(staff_api.get(f"/api/jobs/{job.pk}/events/?last_event_id=0").streaming_content)
    assert everything == events_
    # A malformed id counts as none: the current state first.
    bad = parse_all(staff_api.get(f"/api/jobs/{job.pk}/events/", HTTP_LAST_EVENT_ID="abc").streaming_content)
    assert [k for _, k, _ in bad] == ["state"]


def test_replay_then_live_events_lose_nothing_and_repeat_nothing(staff_api):
    """A client reads part of a live stream, disconnects, events happen meanwhile, it reconnects with its last id:
    what it received in the two connections is exactly the stored log after the first state."""
    job = services.job_create(job_type="jobs.approval_demo", params={})
    drain()  # WAITING for approve or reject
    first_resp = staff_api.get(f"/api/jobs/{job.pk}/events/?last_event_id=0")
    first = iter(first_resp.streaming_content)
    got = []
    while not got or got[-1][1] != "state" or got[-1][2]["state"] != "WAITING":
        got.append(parse_all([next(first)])[0])
    first_resp.close()
    services.job_signal(job_id=job.pk, name="approve", by=None)  # while disconnected
    resp = staff_api.get(f"/api/jobs/{job.pk}/events/", HTTP_LAST_EVENT_ID=str(got[-1][0]))
    second = iter(resp.streaming_content)
    got.append(parse_all([next(second)])[0])  # the missed "signal sent" log, before any live event

    def finish():
        from django.db import connections

        drain()  # the job runs to the end while the second stream is open
        connections.close_all()

    worker = threading.Thread(target=finish)
    worker.start()
    got += [e for e in parse_all(second) if e[1] != "comment"]
    worker.join()
    assert got == stored(job)
    ids = [i for i, _, _ in got]
    assert ids == sorted(set(ids))
    assert got[-1][2]["state"] == "COMPLETED"
    messages = [d["message"] for _, k, d in got if k == "log"]
    assert "signal 'approve' sent" in messages and "signal 'approve' received" in messages


def test_a_user_may_hold_only_so_many_open_streams(staff_api, settings):
    settings.JOBS = {"STREAMS_PER_USER": 2}
    job = services.job_create(job_type="jobs.approval_demo", params={})
    drain()
    first, second = (staff_api.get(f"/api/jobs/{job.pk}/events/") for _ in range(2))
    assert next(iter(first.streaming_content)) and next(iter(second.streaming_content))
    third = staff_api.get(f"/api/jobs/{job.pk}/events/", HTTP_ACCEPT="text/event-stream")
    assert third.status_code == 429
    body = json.loads(third.content)
    assert body["code"] == "too_many_streams" and body["details"] == {"limit": 2} and "2" in body["error"]
    first.close()  # a closed stream gives its slot back at once
    fourth = staff_api.get(f"/api/jobs/{job.pk}/events/")
    assert fourth.status_code == 200
    second.close()
    fourth.close()


def test_events_of_one_job_commit_in_id_order_under_concurrent_writers():
    """Two connections append events to one job at once: the ids, read in commit order, only grow (the job row
    lock in `emit`), so "every event after id N" never skips a late commit."""
    from django.db import connections, transaction

    from jobs.models import JobEventKind

    job = services.job_create(job_type="jobs.approval_demo", params={})
    barrier = threading.Barrier(2)

    def writer(n):
        try:
            barrier.wait()
            for i in range(30):
                with transaction.atomic():
                    events.emit(job.pk, JobEventKind.LOG, {"message": f"w{n} {i}"})
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    from django.db import connection

    with connection.cursor() as cursor:  # xmin orders rows by the transaction that wrote them
        cursor.execute("SELECT id FROM jobs_event WHERE job_id = %s ORDER BY xmin::text::bigint, id", [job.pk])
        by_commit = [r[0] for r in cursor.fetchall()]
    assert len(by_commit) == 61 and by_commit == sorted(by_commit)
