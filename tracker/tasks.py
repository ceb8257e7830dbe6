"""django-q2 entry points (thin): the consumer loop and the maintenance schedules."""

import logging

from django.db import close_old_connections

from tracker import counters, services, worker

log = logging.getLogger(__name__)


def consume(slot: int, token: str = "") -> dict:
    return worker.consume(slot, token)


def maintain() -> dict:
    """Every minute: rescue expired leases, make sure every consumer slot has a live consumer, fold the status
    deltas into the counts and roll old minute counters up."""
    rescued = services.task_rescue()
    services.counters_tick()
    return {"rescued": rescued, "consumers_started": worker.consumers_ensure(), "counters": counters.rollup()}


def prune() -> int:
    return services.task_prune()


def on_worker_spawn(sender=None, proc_name=None, **kwargs):
    """A django-q2 worker process started (cluster start or reincarnation): start consumers for free
    slots at once, so work already due is drained without waiting for the scheduler's tick."""
    close_old_connections()
    try:
        worker.consumers_ensure()
    except Exception:
        log.exception("could not start tracker consumers from %s", proc_name)
    finally:
        close_old_connections()
