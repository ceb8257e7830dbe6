"""Live job events: every state, progress or log change of a job writes a `JobEvent` row and NOTIFYs in the
same transaction (delivered on commit). `stream()` turns them into Server-Sent Events.

Channels: `job_events` with the job's uuid hex as payload (what the per-process listener hub of the streams
listens to), and `job_<uuid hex>` with the event id (for anyone who wants to LISTEN to one job)."""

import asyncio
import json
import logging
import os
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


EVENTS_CHANNEL = "job_events"


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
    wakeup.notify(EVENTS_CHANNEL, uuid.UUID(str(job_id)).hex)
    wakeup.notify(channel(job_id), str(event.id))
    return event


def emit_state(job: Job) -> JobEvent:
    return emit(job.pk, JobEventKind.STATE, state_data(job))


# --- the per-process listener hub ----------------------------------------------------------------------

class ListenerHub:
    """One LISTEN connection per process, shared by every open stream: a thread waits for `job_events`
    notifications and sets the threading.Event of each stream following that job. It starts with the first
    subscriber, reconnects after errors, and stops (closing its connection) when no stream has been open for
    JOBS["HUB_LINGER_SECONDS"]."""

    def __init__(self):
        self._lock = threading.Lock()
        self._subs: dict[str, set[threading.Event]] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._pid = os.getpid()

    def subscribe(self, job_id) -> threading.Event:
        """An Event set whenever the job has new events; waits (a little) until the hub listens, so nothing
        committed after this returns is missed."""
        key = uuid.UUID(str(job_id)).hex
        event = threading.Event()
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread does not exist here
                self.__init__()
            self._subs.setdefault(key, set()).add(event)
            if self._thread is None or not self._thread.is_alive():
                self._ready = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._ready,), daemon=True,
                                                name="jobs-listener-hub")
                self._thread.start()
            ready = self._ready
        ready.wait(5)
        return event

    def unsubscribe(self, job_id, event: threading.Event) -> None:
        key = uuid.UUID(str(job_id)).hex
        with self._lock:
            subs = self._subs.get(key)
            if subs is not None:
                subs.discard(event)
                if not subs:
                    del self._subs[key]

    def _wake_all(self) -> None:
        with self._lock:
            for subs in self._subs.values():
                for event in subs:
                    event.set()

    def _run(self, ready: threading.Event) -> None:
        listener = None
        idle_since = None
        try:
            while True:
                with self._lock:
                    if self._subs:
                        idle_since = None
                    else:
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since >= conf.get("HUB_LINGER_SECONDS"):
                            self._thread = None
                            return
                try:
                    if listener is None:
                        listener = wakeup.Listener(EVENTS_CHANNEL)
                        ready.set()
                        self._wake_all()  # anything may have happened while we were not listening
                    notes = listener.wait(0.5)
                except Exception:
                    log.exception("job events listener failed; reconnecting")
                    if listener is not None:
                        listener.close()
                    listener = None
                    self._wake_all()
                    time.sleep(1)
                    continue
                if notes:
                    with self._lock:
                        for _, payload in notes:
                            for event in self._subs.get(payload, ()):
                                event.set()
        finally:
            ready.set()
            if listener is not None:
                listener.close()


hub = ListenerHub()


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

    Waits for the listener hub (one LISTEN connection per process)."""
    keepalive = conf.get("KEEPALIVE_SECONDS")
    woken = hub.subscribe(job_id)
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
            woken.wait(timeout)
            woken.clear()
    finally:
        hub.unsubscribe(job_id, woken)


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
