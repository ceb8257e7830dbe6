"""The consumer: claims batches, runs handlers, records outcomes; and the long-lived consumer loop that the
django-q2 cluster hosts (one per consumer slot)."""

import datetime as dt
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from tracker import registry, services, wakeup
from tracker.errors import LeaseLost
from tracker.models import TaskStatus, WorkerHeartbeat
from tracker.registry import RunContext

log = logging.getLogger(__name__)


def make_worker_id(suffix: str = "") -> str:
    return f"{socket.gethostname()}:{os.getpid()}{':' + suffix if suffix else ''}"


@dataclass
class Totals:
    processed: int = 0  # tasks claimed
    succeeded: int = 0  # of them COMPLETED
    failed: int = 0  # of them moved to RETRY or FAILED

    def add(self, other: "Totals") -> None:
        self.processed += other.processed
        self.succeeded += other.succeeded
        self.failed += other.failed


class Heartbeat(threading.Thread):
    """Renews the worker's leases (and its consumer slot's beat) every third of a lease, from its own
    database connection, until stopped."""

    def __init__(self, worker_id: str, slot: int | None = None):
        super().__init__(daemon=True, name=f"heartbeat-{worker_id}")
        self.worker_id, self.slot = worker_id, slot
        self.interval = max(0.5, settings.TRACKER["LEASE_SECONDS"] / 3)
        self._stop = threading.Event()
        self.slot_lost = False

    def beat(self) -> None:
        services.task_renew_leases(worker_id=self.worker_id)
        if self.slot is not None and not slot_beat(self.slot, self.worker_id):
            self.slot_lost = True

    def run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.beat()
                except Exception:  # a failed beat must not kill the thread; the next one may succeed
                    log.exception("heartbeat failed")
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop.set()
        self.join(timeout=5)


class Worker:
    """Claims and runs due tasks in batches. Not thread-safe; one per thread or process."""

    def __init__(self, worker_id: str | None = None, *, batch_size: int | None = None, queues=None):
        self.worker_id = worker_id or make_worker_id()
        self.batch_size = batch_size or settings.TRACKER["BATCH_SIZE"]
        self.batch_max = max(self.batch_size, settings.TRACKER["BATCH_MAX"]) if batch_size is None else batch_size
        self.queues = queues
        self.ctx = RunContext(worker_id=self.worker_id,
                              heartbeat=lambda: services.task_renew_leases(worker_id=self.worker_id))

    def run_once(self) -> Totals:
        """Claims one batch and runs it. Batched handlers get their tasks in one transaction; if that
        raises, each task runs on its own so one bad task does not sink the batch."""
        totals = Totals()
        started = time.monotonic()
        tasks = services.task_claim(worker_id=self.worker_id, limit=self.batch_size, queues=self.queues)
        totals.processed = len(tasks)
        fell_back = False
        groups: dict[registry.TaskHandler, list] = defaultdict(list)
        for task in tasks:
            try:
                groups[registry.get(task.task_type).decide(task)].append(task)
            except Exception as exc:
                self._record(totals, task, exc)
        for handler, group in sorted(groups.items(), key=lambda item: item[0].long_running):
            if handler.is_batched() and len(group) > 1:
                try:
                    # One transaction: the tasks' completion first (it fails fast on a lost lease), then the
                    # work, whose last writes may lock shared rows (running balances) until the commit.
                    with transaction.atomic():
                        services.task_complete_many(task_ids=[t.task_id for t in group], worker_id=self.worker_id)
                        handler.run_batch(group, self.ctx)
                    totals.succeeded += len(group)
                    continue
                except Exception as exc:
                    fell_back = True
                    log.warning("batch of %d %s tasks failed (%s); running them one by one",
                                len(group), group[0].task_type, exc)
            for task in group:
                self._run_one(handler, task, totals)
        self._adapt(len(tasks), time.monotonic() - started, fell_back)
        return totals

    def _adapt(self, claimed: int, seconds: float, fell_back: bool) -> None:
        """The claim size adapts: it doubles (up to BATCH_MAX) while full batches finish within
        BATCH_TARGET_SECONDS, and halves (down to 1) when a batch is slower than twice that or had to fall
        back to running its tasks one by one (fewer tasks then share the fate of a bad one)."""
        target = settings.TRACKER["BATCH_TARGET_SECONDS"]
        if fell_back or seconds > 2 * target:
            self.batch_size = max(1, self.batch_size // 2)
        elif claimed >= self.batch_size and seconds < target:
            self.batch_size = min(self.batch_max, self.batch_size * 2)

    def _run_one(self, handler: registry.TaskHandler, task, totals: Totals) -> None:
        try:
            if handler.own_transaction:
                handler.validate(task)
                handler.run(task, self.ctx)
                totals.succeeded += 1
                return
            with transaction.atomic():
                handler.validate(task)
                handler.run(task, self.ctx)
                services.task_complete_many(task_ids=[task.task_id], worker_id=self.worker_id)
            totals.succeeded += 1
        except LeaseLost:
            log.warning("lost the lease of task %s; its writes were rolled back", task.task_id)
        except Exception as exc:
            self._record(totals, task, exc)

    def _record(self, totals: Totals, task, exc: BaseException) -> None:
        status = services.task_record_failure(task=task, worker_id=self.worker_id, exc=exc)
        if status:
            totals.failed += 1
            log.info("task %s %s -> %s: %s", task.task_id, task.task_type, status, exc)

    def drain(self, *, budget_seconds: float, on_batch=None) -> Totals:
        """Runs batches until nothing is due or the budget is spent, renewing leases meanwhile."""
        totals = Totals()
        deadline = time.monotonic() + budget_seconds
        heartbeat = Heartbeat(self.worker_id)
        heartbeat.start()
        try:
            while time.monotonic() < deadline:
                batch = self.run_once()
                totals.add(batch)
                if on_batch:
                    on_batch(batch, totals)
                if not batch.processed:
                    break
        finally:
            heartbeat.stop()
        return totals


# --- consumer slots and the loop the cluster runs ------------------------------------------------------

def stale_before() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=max(10.0, settings.TRACKER["LEASE_SECONDS"]))


def _owner_is_dead(worker_id: str) -> bool:
    """True when the owner ran on this host and its process is gone or a zombie (a killed cluster
    restarted here; a container's init may never reap the killed workers)."""
    parts = worker_id.split(":")
    if len(parts) < 2 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if not os.path.isdir("/proc"):  # not Linux: signal 0 tells whether the process exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _slot_free(row: WorkerHeartbeat) -> bool:
    return row.beat_at is None or row.beat_at < stale_before() or _owner_is_dead(row.worker_id)


def _request_consumer(slot: int) -> None:
    """Asks the cluster for a consumer of `slot` with a fresh token: earlier requests for the slot become
    obsolete and exit at once when they run (so duplicates never run, and a stopping cluster is not held up
    by them). Called inside a transaction with the slot row locked; enqueues after commit."""
    from django_q.tasks import async_task

    token = uuid.uuid4().hex
    WorkerHeartbeat.objects.filter(slot=slot).update(enqueued_at=timezone.now(), request_token=token)
    transaction.on_commit(lambda: async_task("tracker.tasks.consume", slot, token, group="tracker-consumers",
                                             task_name=f"tracker-consumer-{slot}-{token[:8]}"))


def slot_acquire(slot: int, worker_id: str, token: str) -> bool:
    """Takes the slot for the request holding its current token, if its owner stopped beating (or is a
    dead process on this host)."""
    now = timezone.now()
    with transaction.atomic():
        row = WorkerHeartbeat.objects.select_for_update().filter(slot=slot).first()
        if row is None or row.request_token != token or not _slot_free(row):
            return False
        WorkerHeartbeat.objects.filter(slot=slot).update(worker_id=worker_id, started_at=now, beat_at=now,
                                                         enqueued_at=None, request_token="", processed=0)
    return True


def slot_beat(slot: int, worker_id: str, processed: int = 0) -> bool:
    """Records that the slot's owner is alive; False if someone else owns it now."""
    return bool(WorkerHeartbeat.objects.filter(slot=slot, worker_id=worker_id).update(
        beat_at=timezone.now(), processed=F("processed") + processed))


def slot_release(slot: int, worker_id: str, *, successor: bool) -> None:
    """Frees the slot at the end of a slice, asking for a successor consumer when `successor`."""
    with transaction.atomic():
        if WorkerHeartbeat.objects.select_for_update().filter(slot=slot, worker_id=worker_id).update(beat_at=None):
            if successor:
                _request_consumer(slot)


def consumers_ensure() -> list[int]:
    """Asks for a consumer for every free slot not already asked for recently (or whose requester died).
    Returns the slots asked for. Safe to call from many processes at once."""
    wanted = settings.TRACKER["CONSUMERS"]
    WorkerHeartbeat.objects.bulk_create([WorkerHeartbeat(slot=i) for i in range(wanted)], ignore_conflicts=True)
    recent = timezone.now() - dt.timedelta(seconds=settings.Q_CLUSTER["retry"])
    with transaction.atomic():
        rows = list(WorkerHeartbeat.objects.select_for_update(skip_locked=True).filter(slot__lt=wanted))
        slots = [r.slot for r in rows if _slot_free(r) and (
            r.enqueued_at is None or r.enqueued_at < recent or _owner_is_dead(r.worker_id))]
        for slot in slots:
            _request_consumer(slot)
    return slots


def consume(slot: int, token: str) -> dict:
    """The consumer loop for one slot, run as a django-q2 task for one slice (shorter than the cluster's
    timeout): drains due work, waits for NOTIFY, rescues expired leases and restarts
    dead sibling consumers now and then, then hands the slot to a successor task."""
    cfg = settings.TRACKER
    worker_id = make_worker_id(f"slot{slot}")
    close_old_connections()
    if not slot_acquire(slot, worker_id, token):
        return {"slot": slot, "skipped": "obsolete request, or the slot is owned by a live consumer"}
    totals = Totals()
    # Slices of different lengths keep the slots from handing over at the same moment.
    deadline = time.monotonic() + cfg["CONSUMER_SLICE_SECONDS"] * random.uniform(0.8, 1.2)
    next_rescue = 0.0
    worker = Worker(worker_id)
    heartbeat = Heartbeat(worker_id, slot)
    heartbeat.start()
    listener = wakeup.Listener(wakeup.TASKS_CHANNEL)
    successor = False
    try:
        log.debug("consumer %s started", worker_id)
        while time.monotonic() < deadline and not heartbeat.slot_lost:
            if time.monotonic() >= next_rescue:
                services.task_rescue()
                consumers_ensure()  # restart consumers of sibling slots that died
                next_rescue = time.monotonic() + cfg["RESCUE_EVERY_SECONDS"]
            batch = worker.run_once()
            totals.add(batch)
            if batch.processed:
                slot_beat(slot, worker_id, batch.processed)
                continue
            listener.wait(min(cfg["POLL_SECONDS"], max(0.0, deadline - time.monotonic())))
        successor = not heartbeat.slot_lost
    finally:
        heartbeat.stop()
        listener.close()
        slot_release(slot, worker_id, successor=successor)
    return {"slot": slot, "processed": totals.processed, "succeeded": totals.succeeded, "failed": totals.failed}


def cluster_status() -> dict:
    """Worker liveness and queue lag, for /api/health/ and the admin."""
    now = timezone.now()
    stale = stale_before()
    slots = list(WorkerHeartbeat.objects.order_by("slot"))
    oldest_due = (services.ProcessTracker.objects.filter(status__in=(TaskStatus.PENDING, TaskStatus.RETRY),
                                                        run_after__lte=now).order_by("run_after")
                  .values_list("run_after", flat=True).first())
    return {
        "consumers_alive": sum(1 for s in slots if s.beat_at and s.beat_at >= stale),
        "consumers_wanted": settings.TRACKER["CONSUMERS"],
        "queue_lag_seconds": round((now - oldest_due).total_seconds(), 3) if oldest_due else 0.0,
        "heartbeats": [{"slot": s.slot, "worker_id": s.worker_id, "beat_at": s.beat_at,
                        "alive": bool(s.beat_at and s.beat_at >= stale), "processed": s.processed} for s in slots],
    }
