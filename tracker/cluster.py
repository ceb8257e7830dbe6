"""One django-q2 cluster process (`manage.py qcluster`) as the tracker sees it: its identity, its private queue,
and its orderly stop.

- **Identity.** A random id made when the cluster's sentinel starts, inherited by every process it forks (pusher,
  monitor, workers), plus the host name and the sentinel's pid for people to read. Host and pid alone are not
  unique: containers and PID namespaces reuse both. The consumer slots, the worker ids that hold leases and the
  private queue all carry the id, so two clusters never share them, however alike their hosts and pids.
- **Private queue.** Each cluster's pusher also dequeues from a django-q2 queue of its own
  (`<cluster name>@<id>`), where a consumer asks for its own successor: the slot's next slice runs in the same
  cluster, never in another machine's (`Broker`, the ORM broker with a second key).
- **Orderly stop.** The sentinel ignores SIGTERM (django-q2 1.11 leaves it at the default: a SIGTERM to the
  whole process group, as systemd, `kill -- -PGID` or a container runtime send, killed it while it slept on its
  stop event, and the main process then waited forever in `Event.set()` for that dead sleeper); the main process
  alone turns SIGTERM/SIGINT into a stop, and the sentinel first tells its workers (SIGTERM, caught) so their
  consumer loops end after the batch in hand instead of at the end of their slice (`Sentinel`, `stopping`).
"""

import logging
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from functools import cache

from django import db
from django.utils import timezone
from django_q import cluster as q_cluster
from django_q.brokers.orm import ORM
from django_q.conf import Conf

log = logging.getLogger(__name__)

# How long a worker that was asked to stop may take before it exits anyway (its tasks are then rescued).
STOP_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Identity:
    id: str  # random, 12 hex digits
    host: str
    pid: int  # the sentinel's (or this process's when not in a cluster)
    machine: str  # host, boot and PID namespace: pids of rows with the same machine can be checked here

    @property
    def display(self) -> str:
        return f"{self.host}:{self.pid}"


_identity: Identity | None = None


@cache
def machine() -> str:
    """Where a pid means something: the host name, this boot and this PID namespace (Linux)."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path) as f:
                parts.append(f.read().strip())
        except OSError:
            pass
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return "/".join(parts)[:255]


def identity() -> Identity:
    """This cluster's identity: made by the sentinel at cluster start (`start_new_identity`), inherited by the
    processes it forks; a process outside a cluster gets one of its own on first use."""
    global _identity
    if _identity is None:
        start_new_identity()
    return _identity


def start_new_identity() -> Identity:
    global _identity
    machine.cache_clear()
    _identity = Identity(id=uuid.uuid4().hex[:12], host=socket.gethostname()[:100], pid=os.getpid(), machine=machine())
    return _identity


def private_queue(cluster_id: str | None = None) -> str:
    """The django-q2 queue only this cluster's pusher reads."""
    return f"{Conf.PREFIX}@{cluster_id or identity().id}"


def pid_is_dead(pid: int | None) -> bool:
    """True when `pid` (of this machine: same host, boot and PID namespace) is gone or a zombie (a container's
    init may never reap killed processes)."""
    if not pid:
        return False
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


# --- stopping ----------------------------------------------------------------------------------------------

_stopping = threading.Event()


def stopping() -> bool:
    """True once this worker process was asked to stop (SIGTERM): consumers end their slice early."""
    return _stopping.is_set()


def _on_sigterm(signum, frame) -> None:
    if _stopping.is_set():  # the group's SIGTERM and then the sentinel's: one stop
        return
    _stopping.set()

    def exit_late():  # a worker stuck in one task must not hold the stop up for ever: its leases expire
        time.sleep(STOP_GRACE_SECONDS)
        os._exit(1)

    threading.Thread(target=exit_late, daemon=True, name="stop-grace").start()


def install_worker_signals() -> None:
    """In a django-q2 worker process: SIGTERM asks it to stop after the work in hand (see `stopping`)."""
    _stopping.clear()
    signal.signal(signal.SIGTERM, _on_sigterm)


class Sentinel(q_cluster.Sentinel):
    """django-q2's sentinel with a fresh cluster identity, SIGTERM ignored, and workers told to stop first."""

    def start(self):
        start_new_identity()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by pusher and monitor; workers catch it
        log.info("tracker cluster %s (%s) starting", identity().id, identity().display)
        super().start()

    def stop(self):
        for process in list(self.pool):
            try:
                os.kill(process.pid, signal.SIGTERM)
            except (ProcessLookupError, TypeError):
                pass
        super().stop()


# --- the broker ----------------------------------------------------------------------------------------------

DATABASE_ERRORS = (db.OperationalError, db.InterfaceError)


class Broker(ORM):
    """django-q2's ORM broker, reading this cluster's private queue as well as the shared one, and riding out a
    database restart (django-q2's pusher otherwise gives up, sleeps 10 s and is restarted by the sentinel)."""

    def dequeue(self):
        try:
            return self._dequeue()
        except DATABASE_ERRORS:
            log.warning("broker: database unavailable; retrying")
            db.connections.close_all()
            time.sleep(Conf.POLL)
            return None

    def _dequeue(self):
        keys = [self.list_key] if "@" in self.list_key else [self.list_key, private_queue()]
        tasks = self.get_connection().filter(key__in=keys, lock__lt=timezone.now())[0 : Conf.BULK]
        if tasks:
            taken = []
            for task in tasks:
                if self.get_connection().filter(id=task.id, lock=task.lock).update(lock=self.timeout(task)):
                    taken.append((task.pk, task.payload))
            return taken
        time.sleep(Conf.POLL)
        return None
