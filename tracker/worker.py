"""The consumer: claims batches, runs handlers, records outcomes; and the long-lived consumer loop that the
django-q2 cluster hosts (one per consumer slot of its cluster process)."""

import datetime as dt
import logging
import os
import random
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from tracker import cluster, registry, services, wakeup
from tracker.cluster import DATABASE_ERRORS
from tracker.errors import LeaseLost, brief
from tracker.models import TaskStatus, WorkerHeartbeat
from tracker.registry import RunContext

log = logging.getLogger(__name__)


def make_worker_id(suffix: str = "") -> str:
    """`host:pid:cluster-id[:suffix]`: unique across machines and PID namespaces (the cluster id is random), and
    readable. It is what holds a task's lease (`locked_by`) and signs worker-side audit rows."""
    ident = cluster.identity()
    return f"{ident.host}:{os.getpid()}:{ident.id}{':' + suffix if suffix else ''}"


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
                except DATABASE_ERRORS as exc:  # the database restarts: reconnect at the next beat
                    log.warning("heartbeat of %s failed: %s", self.worker_id, brief(exc))
                    connection.close()
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
        self.ctx = RunContext(
            worker_id=self.worker_id, heartbeat=lambda: services.task_renew_leases(worker_id=self.worker_id)
        )

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
            if handler.runs_group():  # it completes its tasks itself (workflow steps: all at once, on threads)
                failures = handler.run_group(group, self.ctx)
                totals.succeeded += len(group) - len(failures)
                for task, exc in failures:
                    self._record(totals, task, exc)
                continue
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
                    log.warning(
                        "batch of %d %s tasks failed (%s); running them one by one", len(group), group[0].task_type, exc
                    )
            for task in group:
                self._run_one(handler, task, totals)
        self._adapt(len(tasks), time.monotonic() - started, fell_back)
        return totals

    def close(self) -> None:
        """Ends what the handlers kept for this worker (workflow step threads and their connections)."""
        self.ctx.close()

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
            self.close()
            heartbeat.stop()
        return totals


# --- consumer slots and the loop the cluster runs ------------------------------------------------------
#
# Every cluster process has TRACKER_CONSUMERS slots of its own: rows (cluster id, slot) of WorkerHeartbeat. Only
# that cluster's processes start, judge or take over its slots, and its consumers ask for their successors on its
# private queue (tracker.cluster), so N clusters run N times the consumers and never take each other's slots.
# Between clusters only the tasks' leases count: a dead cluster's tasks are rescued when their leases expire,
# at once when the dead cluster ran on this machine (its pid can be checked here).


def stale_before() -> dt.datetime:
    return timezone.now() - dt.timedelta(seconds=max(10.0, settings.TRACKER["LEASE_SECONDS"]))


def _own_slots():
    return WorkerHeartbeat.objects.filter(cluster=cluster.identity().id)


def _owner_is_dead(row: WorkerHeartbeat) -> bool:
    """The slot's owner process is gone: judged by pid only where pids mean the same thing (same host, boot and
    PID namespace), never for a process on another machine or in another container."""
    return bool(row.worker_id) and row.machine == cluster.machine() and cluster.pid_is_dead(row.pid)


def _slot_free(row: WorkerHeartbeat) -> bool:
    return not row.worker_id or row.beat_at is None or row.beat_at < stale_before() or _owner_is_dead(row)


def _request_consumer(slot: int) -> None:
    """Asks this cluster (its private queue) for a consumer of `slot` with a fresh token: earlier requests for the
    slot become obsolete and exit at once when they run (so duplicates never run, and a stopping cluster is not
    held up by them). Called inside a transaction with the slot row locked; enqueues after commit."""
    from django_q.brokers import get_broker
    from django_q.tasks import async_task

    token = uuid.uuid4().hex
    _own_slots().filter(slot=slot).update(enqueued_at=timezone.now(), request_token=token)
    queue = cluster.private_queue()
    transaction.on_commit(
        lambda: async_task(
            "tracker.tasks.consume",
            slot,
            token,
            group="tracker-consumers",
            task_name=f"tracker-consumer-{slot}-{token[:8]}",
            broker=get_broker(queue),
        )
    )


def slot_acquire(slot: int, worker_id: str, token: str) -> bool:
    """Takes this cluster's slot for the request holding its current token, if the slot is free (released, its
    owner stopped beating, or its owner's process is dead)."""
    now = timezone.now()
    with transaction.atomic():
        row = _own_slots().select_for_update().filter(slot=slot).first()
        if row is None or row.request_token != token or not _slot_free(row):
            return False
        _own_slots().filter(slot=slot).update(
            worker_id=worker_id,
            pid=os.getpid(),
            started_at=now,
            beat_at=now,
            enqueued_at=None,
            request_token="",
            processed=0,
        )
    return True


def slot_beat(slot: int, worker_id: str, processed: int = 0) -> bool:
    """Records that the slot's owner is alive; False if someone else owns it now."""
    return bool(
        _own_slots()
        .filter(slot=slot, worker_id=worker_id)
        .update(beat_at=timezone.now(), processed=F("processed") + processed)
    )


def slot_release(slot: int, worker_id: str, *, successor: bool) -> None:
    """Frees the slot at the end of a slice, asking for a successor consumer when `successor`."""
    with transaction.atomic():
        if (
            _own_slots()
            .select_for_update()
            .filter(slot=slot, worker_id=worker_id)
            .update(worker_id="", pid=None, beat_at=timezone.now())
        ):
            if successor:
                _request_consumer(slot)


def consumers_ensure() -> list[int]:
    """Asks for a consumer for each of this cluster's free slots not already asked for recently; rescues at once
    the tasks of its consumers whose process died, and of dead clusters of this machine. Returns the slots asked
    for. Safe to call from many processes at once."""
    ident = cluster.identity()
    wanted = settings.TRACKER["CONSUMERS"]
    now = timezone.now()
    WorkerHeartbeat.objects.bulk_create(
        [
            WorkerHeartbeat(
                cluster=ident.id, slot=i, host=ident.host, cluster_pid=ident.pid, machine=ident.machine, beat_at=now
            )
            for i in range(wanted)
        ],
        ignore_conflicts=True,
    )
    recent = now - dt.timedelta(seconds=settings.Q_CLUSTER["retry"])
    dead_owners = []
    with transaction.atomic():
        rows = list(_own_slots().select_for_update(skip_locked=True).filter(slot__lt=wanted))
        slots = []
        for row in rows:
            if _owner_is_dead(row):
                dead_owners.append(row.worker_id)
                _own_slots().filter(slot=row.slot).update(worker_id="", pid=None, enqueued_at=None)
                row.enqueued_at = None
            elif not _slot_free(row):
                continue
            if row.enqueued_at is None or row.enqueued_at < recent:
                _request_consumer(row.slot)
                slots.append(row.slot)
    if dead_owners:
        log.warning("consumers %s died; rescuing their tasks", ", ".join(dead_owners))
        services.task_rescue(holders=dead_owners)
    clusters_rescue_dead_here()
    return slots


def clusters_rescue_dead_here() -> list[str]:
    """Clusters of this machine whose sentinel is gone (a cluster killed, then started again here): their tasks
    are rescued now, without waiting for the leases, and their slots deleted. Returns their ids."""
    ident = cluster.identity()
    others = (
        WorkerHeartbeat.objects.filter(machine=ident.machine)
        .exclude(cluster=ident.id)
        .values_list("cluster", "cluster_pid")
        .distinct()
    )
    dead = [cid for cid, pid in others if cluster.pid_is_dead(pid)]
    for cid in dead:
        holders = list(
            services.ProcessTracker.objects.filter(status=TaskStatus.PROCESSING, locked_by__contains=f":{cid}")
            .values_list("locked_by", flat=True)
            .distinct()
        )
        if holders:
            log.warning("cluster %s of this machine died; rescuing the tasks of %s", cid, ", ".join(holders))
            services.task_rescue(holders=holders)
        WorkerHeartbeat.objects.filter(cluster=cid).delete()
    return dead


def clusters_prune(*, older_than_seconds: float = 3600) -> int:
    """Deletes the slots of clusters not seen for an hour, and the requests left in their private queues."""
    from django_q.models import OrmQ

    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    alive = set(WorkerHeartbeat.objects.filter(beat_at__gte=cutoff).values_list("cluster", flat=True))
    gone = set(WorkerHeartbeat.objects.exclude(cluster__in=alive).values_list("cluster", flat=True))
    deleted = WorkerHeartbeat.objects.filter(cluster__in=gone).delete()[0]
    prefix = cluster.private_queue("")
    orphans = [
        key
        for key in OrmQ.objects.filter(key__startswith=prefix).values_list("key", flat=True).distinct()
        if key[len(prefix) :] not in alive
    ]
    OrmQ.objects.filter(key__in=orphans).delete()
    return deleted


def _recover(worker_id: str, *, until: float, exc: BaseException) -> bool:
    """After a database error in the loop: reconnect (retrying with backoff until `until`), then put the tasks
    this consumer still holds back to RETRY at once (their batch rolled back, or its outcome is unknown: a claim
    whose commit was cut off). True once the database answers again."""
    log.warning("consumer %s: database error (%s); reconnecting", worker_id, brief(exc))
    delay = 0.1
    while True:
        connection.close()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            rescued = services.task_rescue(holders=[worker_id])
            log.warning(
                "consumer %s: database back; %s of its tasks put back",
                worker_id,
                rescued["retried"] + rescued["failed"],
            )
            return True
        except DATABASE_ERRORS:
            if time.monotonic() + delay >= until:
                return False
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def consume(slot: int, token: str) -> dict:
    """The consumer loop for one of this cluster's slots, run as a django-q2 task for one slice (shorter than the
    cluster's timeout): drains due work, waits for NOTIFY, rescues expired leases (as soon as the first one
    expires) and restarts dead sibling consumers now and then, then hands the slot to a successor task on the
    cluster's private queue. A database restart is ridden out (reconnect, then on); a stopping cluster ends the
    slice after the batch in hand, with no successor."""
    cfg = settings.TRACKER
    if cluster.stopping():
        return {"slot": slot, "skipped": "the cluster is stopping"}
    worker_id = make_worker_id(f"s{slot}")
    close_old_connections()
    if not slot_acquire(slot, worker_id, token):
        return {"slot": slot, "skipped": "obsolete request, or the slot is owned by a live consumer"}
    totals = Totals()
    started = time.monotonic()
    # Slices of different lengths keep the slots from handing over at the same moment.
    deadline = started + cfg["CONSUMER_SLICE_SECONDS"] * random.uniform(0.8, 1.2)
    # How long a database outage is ridden out, within django-q2's timeout (which would kill the task).
    give_up = started + max(deadline - started, settings.Q_CLUSTER["timeout"] - 10)
    next_rescue = 0.0
    worker = Worker(worker_id)
    heartbeat = Heartbeat(worker_id, slot)
    heartbeat.start()
    listener = wakeup.Listener(wakeup.TASKS_CHANNEL)
    successor = False
    try:
        log.debug("consumer %s started", worker_id)
        while time.monotonic() < deadline and not heartbeat.slot_lost and not cluster.stopping():
            try:
                if time.monotonic() >= next_rescue:
                    services.task_rescue()
                    services.counters_tick()  # status deltas into the counts, queue samples (tracker.counters)
                    consumers_ensure()  # restart consumers of sibling slots that died
                    next_rescue = time.monotonic() + _seconds_to_next_rescue()
                batch = worker.run_once()
                totals.add(batch)
                if batch.processed:
                    slot_beat(slot, worker_id, batch.processed)
                    continue
                now = time.monotonic()
                listener.wait(max(0.0, min(cfg["POLL_SECONDS"], deadline - now, next_rescue - now)))
            except DATABASE_ERRORS as exc:
                if not _recover(worker_id, until=give_up, exc=exc):
                    break
        successor = not heartbeat.slot_lost and not cluster.stopping() and time.monotonic() < give_up
    finally:
        worker.close()
        heartbeat.stop()
        listener.close()
        _release(slot, worker_id, successor=successor, until=give_up)
    return {"slot": slot, "processed": totals.processed, "succeeded": totals.succeeded, "failed": totals.failed}


def _seconds_to_next_rescue() -> float:
    """Until the first lease expires (a dead worker's tasks are taken over then, not up to a rescue period
    later), at most the rescue period."""
    period = settings.TRACKER["RESCUE_EVERY_SECONDS"]
    first = services.task_first_lease_expiry()
    if first is None:
        return period
    return min(period, max(0.05, (first - timezone.now()).total_seconds() + 0.05))


def _release(slot: int, worker_id: str, *, successor: bool, until: float) -> None:
    delay = 0.1
    while True:
        try:
            slot_release(slot, worker_id, successor=successor)
            return
        except DATABASE_ERRORS as exc:
            connection.close()
            if time.monotonic() + delay >= until:  # the maintenance schedule restarts the slot later
                log.warning("consumer %s could not release its slot: %s", worker_id, brief(exc))
                return
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def cluster_status() -> dict:
    """Worker liveness and queue lag, for /api/health/ and the admin: every cluster's slots."""
    now = timezone.now()
    stale = stale_before()
    slots = list(WorkerHeartbeat.objects.order_by("cluster", "slot"))
    oldest_due = (
        services.ProcessTracker.objects.filter(status__in=(TaskStatus.PENDING, TaskStatus.RETRY), run_after__lte=now)
        .order_by("run_after")
        .values_list("run_after", flat=True)
        .first()
    )

    def alive(s: WorkerHeartbeat) -> bool:
        return bool(s.worker_id and s.beat_at and s.beat_at >= stale)

    clusters = {}
    for s in slots:
        c = clusters.setdefault(
            s.cluster,
            {"cluster": s.cluster, "host": s.host, "pid": s.cluster_pid, "consumers_alive": 0, "last_beat_at": None},
        )
        c["consumers_alive"] += alive(s)
        if s.beat_at and (c["last_beat_at"] is None or s.beat_at > c["last_beat_at"]):
            c["last_beat_at"] = s.beat_at
    live_clusters = [c for c in clusters.values() if c["last_beat_at"] and c["last_beat_at"] >= stale]
    return {
        "consumers_alive": sum(1 for s in slots if alive(s)),
        "consumers_wanted": settings.TRACKER["CONSUMERS"] * max(1, len(live_clusters)),
        "consumers_per_cluster": settings.TRACKER["CONSUMERS"],
        "clusters": list(clusters.values()),
        "queue_lag_seconds": round((now - oldest_due).total_seconds(), 3) if oldest_due else 0.0,
        "heartbeats": [
            {
                "cluster": s.cluster,
                "slot": s.slot,
                "worker_id": s.worker_id,
                "beat_at": s.beat_at,
                "alive": alive(s),
                "processed": s.processed,
            }
            for s in slots
        ],
    }
