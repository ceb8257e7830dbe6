"""Live job events: every state, progress or log change of a job writes a `JobEvent` row and NOTIFYs the
job's channel in the same transaction (delivered on commit). `stream()` turns them into Server-Sent Events.

Channel per job: `job_<uuid hex>`; the payload is the event id."""

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.db.models import Max

from jobs import conf
from jobs.models import TERMINAL_STATES, Job, JobEvent, JobEventKind
from tracker import wakeup

log = logging.getLogger(__name__)


def channel(job_id) -> str:
    return f"job_{uuid.UUID(str(job_id)).hex}"


def state_data(job: Job) -> dict:
    """What a `state` event carries: enough for a client to draw the job."""
    return {
        "job_id": str(job.pk),
        "state": job.state,
        "progress": job.progress,
        "step": job.step,
        "error": job.error,
        "waiting_for": job.wait_signal.split(",") if job.state == "WAITING" and job.wait_signal else [],
        "wake_at": job.wake_at.isoformat() if job.state == "WAITING" and job.wake_at else None,
    }


def emit(job_id, kind: str, data: dict) -> JobEvent:
    """Writes one event and queues the NOTIFY, in the caller's transaction (or autocommit)."""
    data = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    event = JobEvent.objects.create(job_id=job_id, kind=kind, data=data)
    wakeup.notify(channel(job_id), str(event.id))
    return event


def emit_state(job: Job) -> JobEvent:
    return emit(job.pk, JobEventKind.STATE, state_data(job))


# --- Server-Sent Events ----------------------------------------------------------------------------------

def sse(event: str, data: dict, event_id: int | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


KEEPALIVE = b": keep-alive\n\n"


def stream(job_id, *, stop: threading.Event | None = None) -> Iterator[bytes]:
    """Yields the job's current state at once, then every new event, with keep-alive comments when idle;
    returns after a terminal state. A sync generator (WSGI); `astream` adapts it for ASGI.

    Waits with LISTEN on PostgreSQL (one connection per stream), polls elsewhere."""
    keepalive = conf.get("KEEPALIVE_SECONDS")
    listener = wakeup.Listener(channel(job_id)) if wakeup.is_postgres() else None
    try:
        # LISTEN first, then the cursor, then the snapshot: nothing committed after the snapshot is missed
        # (an event already reflected in the snapshot may be sent again, which is harmless).
        cursor = JobEvent.objects.filter(job_id=job_id).aggregate(m=Max("id"))["m"] or 0
        job = Job.objects.get(pk=job_id)
        yield sse("state", state_data(job), cursor or None)
        if job.state in TERMINAL_STATES:
            return
        last_sent = time.monotonic()
        while not (stop and stop.is_set()):
            events = list(JobEvent.objects.filter(job_id=job_id, id__gt=cursor).order_by("id")[:500])
            for event in events:
                cursor = event.id
                yield sse(event.kind, event.data, event.id)
                if event.kind == JobEventKind.STATE and event.data.get("state") in TERMINAL_STATES:
                    return
            if events:
                last_sent = time.monotonic()
                continue
            idle = time.monotonic() - last_sent
            if idle >= keepalive:
                yield KEEPALIVE
                last_sent = time.monotonic()
                continue
            # Short waits so a stop request (ASGI disconnect) is noticed quickly.
            timeout = min(keepalive - idle, 1.0 if stop else keepalive - idle)
            if listener is not None:
                listener.wait(timeout)
            else:
                time.sleep(min(timeout, conf.get("POLL_SECONDS")))
    finally:
        if listener is not None:
            listener.close()


async def astream(job_id) -> AsyncIterator[bytes]:
    """`stream` for ASGI: runs the sync generator in a thread of its own (with its own database connection)
    and hands its chunks over; stops the thread when the client goes away."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(item):
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is gone
            stop.set()

    def produce():
        try:
            for chunk in stream(job_id, stop=stop):
                put(chunk)
                if stop.is_set():
                    break
        except Exception:
            log.exception("job event stream %s failed", job_id)
        finally:
            connections.close_all()
            put(None)

    threading.Thread(target=produce, daemon=True, name=f"sse-{job_id}").start()
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
    finally:
        stop.set()
