"""Live job events: every state, progress or log change of a job writes a `JobEvent` row and NOTIFYs in the
same transaction (delivered on commit); `emit` is the one way to append one. `stream()` (WSGI) and `astream()`
(ASGI) turn them into Server-Sent Events, each stored event with its `id:` (the `JobEvent` id).

Ordering: `emit` locks the job's row before it draws the event id, so the events of one job commit in id
order, and "every event after id N" read at any moment never skips one that commits later.

Streams hold no database connection: one hub per process (two threads, two connections whatever the number of
open streams) does all their reading. Its listener thread LISTENs on `job_events` and hands the job ids it hears
about to its reader thread, which reads each such job's new events once for all the streams following that job and
hands the encoded chunks to them. Both reconnect by themselves after a database restart; after a reconnect every
followed job is read again from each stream's last id, so nothing is lost and nothing is sent twice.

Channels: `job_events` with the job's uuid hex as payload (what the hub listens to), and `job_<uuid hex>` with the
event id (for anyone who wants to LISTEN to one job)."""

import asyncio
import json
import logging
import os
import queue
import select
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from jobs import conf
from jobs.errors import TooManyStreams
from jobs.models import TERMINAL_STATES, Job, JobEvent, JobEventKind
from tracker import wakeup

log = logging.getLogger(__name__)


EVENTS_CHANNEL = "job_events"
READ_BATCH = 500


CHANNEL_PREFIX = "job_"  # a job's own channel: the prefix and its id's 32 hex digits


def channel(job_id) -> str:
    return f"{CHANNEL_PREFIX}{uuid.UUID(str(job_id)).hex}"


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
    """Appends one event to the job's log and queues its NOTIFY, in the caller's transaction (or a transaction of
        its own). Locks the job's row first (FOR NO KEY UPDATE, the lock an UPDATE of the row takes anyway), so the
        events of a job commit in the order of their ids. Adds `at` (when it happened, ISO 8601) to `data`, which it
    assumes JSON-serialisable with Django's encoder."""
    data = json.loads(json.dumps({**data, "at": data.get("at") or timezone.now()}, cls=DjangoJSONEncoder))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 FROM {Job._meta.db_table} WHERE job_id = %s FOR NO KEY UPDATE", [uuid.UUID(str(job_id))]
            )
        event = JobEvent.objects.create(job_id=job_id, kind=kind, data=data)
        wakeup.notify(EVENTS_CHANNEL, uuid.UUID(str(job_id)).hex)
        wakeup.notify(channel(job_id), str(event.id))
    return event


def emit_state(job: Job) -> JobEvent:
    return emit(job.pk, JobEventKind.STATE, state_data(job))


# --- Server-Sent Events encoding ------------------------------------------------------------------------


def sse(event: str, data: dict, event_id: int | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


KEEPALIVE = b": keep-alive\n\n"
END = None  # what a subscription receives after the job's terminal state


def parse_last_event_id(value) -> int | None:
    """The `Last-Event-ID` header or `last_event_id` parameter as an event id; None when absent or not a
    non-negative integer (the client then gets the current state first, as a new client does)."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 0 <= number < 2**63 else None


# --- the per-process hub ---------------------------------------------------------------------------------


class Subscription:
    """One open stream: the job it follows, the last event id it was given, and how to hand it chunks (a
    callable taking a list of bytes, END last). Touched by the reader thread only, after `open`."""

    __slots__ = ("closed", "cursor", "deliver", "job_id", "key", "opened", "replay_from", "user_key")

    def __init__(self, job_id, last_event_id: int | None, deliver: Callable[[list], None], user_key):
        self.job_id = uuid.UUID(str(job_id))
        self.key = self.job_id.hex
        self.cursor = 0
        self.replay_from = last_event_id
        self.deliver = deliver
        self.user_key = user_key
        self.closed = False
        self.opened = False


class Hub:
    """The event streams of one process: a listener thread (one LISTEN connection) and a reader thread (one
    Django connection) shared by every open stream. They start with the first stream and stop, closing their
    connections, when no stream has been open for JOBS["HUB_LINGER_SECONDS"]. Per-user slots cap the streams a
    user may hold open in this process (JOBS["STREAMS_PER_USER"])."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._subs: dict[str, set[Subscription]] = {}  # reader thread only
        self._open = 0
        self._slots: dict = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # --- what streams call ---------------------------------------------------------------------------
    def acquire_slot(self, user_key) -> Callable[[], None]:
        """Takes one of the user's stream slots (TooManyStreams, 429, when none is left); returns the
        (idempotent) function that gives it back."""
        limit = int(conf.get("STREAMS_PER_USER"))
        with self._lock:
            self._check_fork()
            if limit and self._slots.get(user_key, 0) >= limit:
                raise TooManyStreams(
                    f"At most {limit} open event streams per user; close one first.", details={"limit": limit}
                )
            self._slots[user_key] = self._slots.get(user_key, 0) + 1
        released = []

        def release():
            with self._lock:
                if released:
                    return
                released.append(True)
                left = self._slots.get(user_key, 1) - 1
                if left > 0:
                    self._slots[user_key] = left
                else:
                    self._slots.pop(user_key, None)

        return release

    def open(self, job_id, last_event_id: int | None, deliver: Callable[[list], None], user_key=None) -> Subscription:
        """Starts following the job: `deliver` gets the chunks (from the reader thread), first the replay (every
        stored event after `last_event_id`) or, without it, the job's current state; END after its terminal
        state. Never touches the database in the caller's thread."""
        sub = Subscription(job_id, last_event_id, deliver, user_key)
        with self._lock:
            self._check_fork()
            self._open += 1
            self._ensure_threads()
        self._work.put(("open", sub))
        return sub

    def close(self, sub: Subscription) -> None:
        if sub.closed:
            return
        sub.closed = True
        with self._lock:
            self._open -= 1
        self._work.put(("close", sub))

    @property
    def open_streams(self) -> int:
        return self._open

    # --- threads -------------------------------------------------------------------------------------
    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's threads do not exist here
            self.__init__()

    def _ensure_threads(self) -> None:
        if self._threads and all(t.is_alive() for t in self._threads) and not self._stop.is_set():
            return
        for t in self._threads:
            t.join(5)  # a stopping hub: let it finish before a new one starts
        self._stop = threading.Event()
        self._work = queue.SimpleQueue()
        self._subs = {}
        stop, work = self._stop, self._work
        self._threads = [
            threading.Thread(target=self._listen, args=(stop, work), daemon=True, name="jobs-listener-hub"),
            threading.Thread(target=self._read, args=(stop, work), daemon=True, name="jobs-events-reader"),
        ]
        for t in self._threads:
            t.start()

    def _listen(self, stop: threading.Event, work: queue.SimpleQueue) -> None:
        """LISTENs on `job_events` and queues ("dirty", job key) for the reader; ("all",) after each (re)connect,
        since anything may have happened while it was not listening."""
        listener = None
        try:
            while not stop.is_set():
                try:
                    if listener is None:
                        listener = wakeup.Listener(EVENTS_CHANNEL)
                        work.put(("all",))
                    if not select.select([listener.conn.fileno()], [], [], 0.5)[0]:
                        continue
                    keys = {note.payload for note in listener.conn.notifies(timeout=0)}
                except Exception as exc:
                    log.warning("job events listener lost its connection (%s); reconnecting", exc)
                    if listener is not None:
                        try:
                            listener.close()
                        except Exception:
                            pass
                    listener = None
                    stop.wait(1)
                    continue
                for key in keys:
                    work.put(("dirty", key))
        finally:
            if listener is not None:
                try:
                    listener.close()
                except Exception:
                    pass

    def _read(self, stop: threading.Event, work: queue.SimpleQueue) -> None:
        """Serves the work queue in batches: opens, closes, and jobs with new events (read once per job for all
        its streams). A database error keeps the batch's reads pending and retries them after a pause."""
        linger = conf.get("HUB_LINGER_SECONDS")
        idle_since = None
        pending_opens: list[Subscription] = []
        dirty: set[str] = set()
        try:
            while True:
                items = []
                try:
                    items.append(work.get(timeout=0.5))
                    while True:
                        items.append(work.get_nowait())
                except queue.Empty:
                    pass
                for item in items:
                    if item[0] == "open":
                        pending_opens.append(item[1])
                    elif item[0] == "close":
                        self._drop(item[1])
                    elif item[0] == "dirty":
                        dirty.add(item[1])
                    else:  # "all"
                        dirty.update(self._subs)
                if pending_opens or dirty:
                    try:
                        while pending_opens:
                            sub = pending_opens[0]
                            if not sub.closed:
                                self._open_sub(sub)
                            pending_opens.pop(0)
                        while dirty:
                            key = next(iter(dirty))
                            self._read_job(key)
                            dirty.discard(key)
                    except Exception as exc:
                        log.warning("job events reader failed (%s); retrying", exc)
                        connection.close()
                        stop.wait(1)
                        continue
                with self._lock:
                    busy = self._open > 0 or bool(pending_opens)
                    if busy:
                        idle_since = None
                    else:
                        idle_since = idle_since or time.monotonic()
                        if time.monotonic() - idle_since >= linger:
                            stop.set()
                            return
        finally:
            stop.set()
            connection.close()

    # --- reader-thread work --------------------------------------------------------------------------
    def _drop(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]

    def _finish(self, sub: Subscription, chunks: list) -> None:
        chunks.append(END)
        sub.deliver(chunks)
        self._drop(sub)

    def _open_sub(self, sub: Subscription) -> None:
        if sub.replay_from is not None:
            sub.cursor = sub.replay_from
            sub.opened = True
            self._subs.setdefault(sub.key, set()).add(sub)
            self._read_job(sub.key, only=sub)
            if sub in self._subs.get(sub.key, ()):
                # Reconnected after the end (or to a job that is gone): its last events, if any, then the end.
                state = Job.objects.filter(pk=sub.job_id).values_list("state", flat=True).first()
                if state is None or state in TERMINAL_STATES:
                    self._read_job(sub.key, only=sub)
                    if sub in self._subs.get(sub.key, ()):
                        self._finish(sub, [])
            return
        # Registered first, then the cursor, then the snapshot: an event committed after the cursor is read is
        # sent after the snapshot (it may already be reflected in it, which is harmless).
        self._subs.setdefault(sub.key, set()).add(sub)
        cursor = JobEvent.objects.filter(job_id=sub.job_id).aggregate(m=Max("id"))["m"] or 0
        job = Job.objects.filter(pk=sub.job_id).first()
        sub.cursor, sub.opened = cursor, True
        if job is None:
            self._finish(sub, [])
            return
        chunk = sse(JobEventKind.STATE, state_data(job), cursor or None)
        if job.state in TERMINAL_STATES:
            self._finish(sub, [chunk])
        else:
            sub.deliver([chunk])

    def _read_job(self, key: str, only: Subscription | None = None) -> None:
        """Reads the job's events after the lowest cursor of its streams (in batches) and hands each stream those
        after its own cursor, in order; a terminal `state` event ends the stream."""
        while True:
            subs = [only] if only is not None else [s for s in self._subs.get(key, ()) if s.opened and not s.closed]
            subs = [s for s in subs if not s.closed]
            if not subs:
                return
            low = min(s.cursor for s in subs)
            rows = list(
                JobEvent.objects.filter(job_id=subs[0].job_id, id__gt=low)
                .order_by("id")
                .values_list("id", "kind", "data")[:READ_BATCH]
            )
            if not rows:
                return
            encoded = [
                (
                    event_id,
                    sse(kind, data, event_id),
                    kind == JobEventKind.STATE and data.get("state") in TERMINAL_STATES,
                )
                for event_id, kind, data in rows
            ]
            for sub in subs:
                chunks, ended = [], False
                for event_id, chunk, terminal in encoded:
                    if event_id > sub.cursor:
                        chunks.append(chunk)
                        sub.cursor = event_id
                        if terminal:
                            ended = True
                            break
                if ended:
                    self._finish(sub, chunks)
                elif chunks:
                    sub.deliver(chunks)
            if len(rows) < READ_BATCH:
                return


hub = Hub()


# --- the streams -----------------------------------------------------------------------------------------


def stream(job_id, *, last_event_id: int | None = None, user_key=None) -> Iterator[bytes]:
    """Server-Sent Events of the job for WSGI (a sync generator): the replay after `last_event_id`, or the
    current state; then every new event; keep-alive comments when idle; returns after a terminal state."""
    keepalive = conf.get("KEEPALIVE_SECONDS")
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    sub = hub.open(job_id, last_event_id, inbox.put, user_key)
    try:
        while True:
            try:
                chunks = inbox.get(timeout=keepalive)
            except queue.Empty:
                yield KEEPALIVE
                continue
            for chunk in chunks:
                if chunk is END:
                    return
                yield chunk
    finally:
        hub.close(sub)


async def astream(job_id, *, last_event_id: int | None = None, user_key=None) -> AsyncIterator[bytes]:
    """`stream` for ASGI: no thread and no database connection of its own; the hub hands it its chunks through
    the event loop. A disconnect (cancellation) closes the subscription at once."""
    keepalive = conf.get("KEEPALIVE_SECONDS")
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def deliver(chunks):
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, chunks)
        except RuntimeError:  # the loop is gone; the subscription is closed by the finally below or never
            pass

    sub = hub.open(job_id, last_event_id, deliver, user_key)
    try:
        while True:
            try:
                chunks = await asyncio.wait_for(inbox.get(), keepalive)
            except TimeoutError:
                yield KEEPALIVE
                continue
            for chunk in chunks:
                if chunk is END:
                    return
                yield chunk
    finally:
        hub.close(sub)
