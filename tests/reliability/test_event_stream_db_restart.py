"""The event streams' listener survives a database restart (issue 17 item 6): a stream open on a real uvicorn keeps
going across a PostgreSQL restart, and gets, once and in order, the events written after it, including those
written before the hub had reconnected. Runs on a PostgreSQL server of its own (the suite's is shared)."""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT, wait_until
from tests.jobs.streamflood import SSEClient, run_async
from tests.pgserver import Server, free_port
from tests.reliability.server import answers, uvicorn_command

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

SETUP = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from jobs import services
from tracker.worker import Worker
user = get_user_model().objects.create_superuser("ops", "ops@example.com", "x")
job = services.job_create(job_type="jobs.approval_demo", params={})
Worker("setup").drain(budget_seconds=10)
print("SETUP", Token.objects.get_or_create(user=user)[0].key, job.pk)
"""

EVENTS = """
import json
from jobs.models import JobEvent
rows = JobEvent.objects.filter(job_id="{job}").order_by("id").values_list("id", "kind", "data")
print("EVENTS", json.dumps([list(r) for r in rows]))
"""


def manage(env, *args) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def post(url, token, path, body=None):
    request = urllib.request.Request(
        f"{url}{path}",
        method="POST",
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def test_a_stream_survives_a_postgresql_restart_and_loses_nothing(tmp_path):
    server = Server().start()
    uvicorn = None
    try:
        env = dict(
            os.environ,
            DATABASE_URL=server.url,
            PYTHONUNBUFFERED="1",
            JOBS_KEEPALIVE_SECONDS="2",
            JOBS_HUB_LINGER_SECONDS="0",
        )
        manage(env, "migrate", "--noinput")
        setup = next(line for line in manage(env, "shell", "-c", SETUP).splitlines() if line.startswith("SETUP"))
        _, token, job_id = setup.split()
        port = free_port()
        log = open(tmp_path / "uvicorn.log", "wb")  # noqa: SIM115 (the server's output, open while it runs)
        uvicorn = subprocess.Popen(
            uvicorn_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"

        wait_until(lambda: answers(url), 60, interval=0.2, message="uvicorn to answer")
        figures = {}

        async def scenario():
            client = await SSEClient(port, f"/api/jobs/{job_id}/events/", token).open()
            assert client.status == 200
            first = await asyncio.wait_for(client.next_event(), 30)
            assert first[1] == "state" and first[2]["state"] == "WAITING"
            started = time.monotonic()
            await asyncio.to_thread(
                subprocess.run,
                server._as_user(
                    [
                        f"{server.bindir}/pg_ctl",
                        "-D",
                        server.data,
                        "-l",
                        os.path.join(server.root, "server.log"),
                        "-m",
                        "fast",
                        "-w",
                        "restart",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
            figures["restart_seconds"] = round(time.monotonic() - started, 2)
            # At once, before the hub has noticed: this event must still reach the stream.
            restarted = time.monotonic()
            await asyncio.to_thread(post, url, token, f"/api/jobs/{job_id}/signal/", {"name": "approve"})
            got = []
            while not got or got[-1][1] != "state":
                event = await asyncio.wait_for(client.next_event(), 30)
                assert event is not None, "the stream closed"
                got.append(event)
            figures["first_event_after_restart_seconds"] = round(time.monotonic() - restarted, 2)
            # And the live path works again after the reconnect.
            await asyncio.sleep(1.5)
            await asyncio.to_thread(post, url, token, f"/api/jobs/{job_id}/cancel/")
            while (event := await asyncio.wait_for(client.next_event(), 30)) is not None:
                got.append(event)
            client.close()
            return first, got

        first, got = run_async(scenario())
        out = manage(env, "shell", "-c", EVENTS.format(job=job_id))
        stored = [tuple(r) for r in json.loads(out.split("EVENTS", 1)[1])]
        assert got == [e for e in stored if e[0] > first[0]]
        assert got[-1][2]["state"] == "CANCELLED"
        assert any(k == "log" and d["message"].startswith("signal 'approve' sent") for _, k, d in got)
        print(
            "event stream across a PostgreSQL restart:",
            " ".join(f"{k}={v}" for k, v in figures.items()),
            f"events={len(got)}",
            file=sys.stderr,
        )
    finally:
        if uvicorn is not None:
            uvicorn.kill()
            uvicorn.wait(10)
        server.stop()
