"""django-q2 entry points (thin): the consumer loop and the maintenance schedules."""

import logging

from django.db import close_old_connections

from tracker import cluster, counters, services, worker

log = logging.getLogger(__name__)


def consume(slot: int, token: str = "") -> dict:
    return worker.consume(slot, token)


def maintain() -> dict:
    """Every minute, in whichever cluster runs it: rescue expired leases, make sure each of this cluster's slots
    has a live consumer, forget clusters gone for an hour, fold the status deltas into the counts and roll old
    minute counters up."""
    rescued = services.task_rescue()
    services.counters_tick()
    return {
        "rescued": rescued,
        "consumers_started": worker.consumers_ensure(),
        "clusters_pruned": worker.clusters_prune(),
        "counters": counters.rollup(),
    }


def prune() -> int:
    return services.task_prune()


def on_worker_spawn(sender=None, proc_name=None, **kwargs):
    """A django-q2 worker process started (cluster start or reincarnation): SIGTERM now asks it to stop after
    the work in hand, and consumers start for free slots at once, so work already due is drained without
    waiting for the scheduler's tick."""
    cluster.install_worker_signals()
    close_old_connections()
    try:
        worker.consumers_ensure()
    except Exception:
        log.exception("could not start tracker consumers from %s", proc_name)
    finally:
        close_old_connections()
