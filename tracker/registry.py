"""Task-type registry: one handler class per task type.

A handler's life for a claimed task: `decide(task)` picks the handler that runs it (a type may route to
variants), `validate(task)` rejects bad payloads with a PermanentError, `run(task, ctx)` does the work.
`run_batch(tasks, ctx)` processes many tasks in one transaction for batched handlers (`is_batched()`).
Database writes of `run`/`run_batch` commit together with the task's completion."""

import random
from dataclasses import dataclass, field
from importlib import import_module

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from tracker.errors import UnknownTaskType


@dataclass
class RunContext:
    """What a handler gets besides the task: who runs it, and a way to renew its lease."""

    worker_id: str
    heartbeat: "callable"  # renews the leases this worker holds
    # What handlers keep for the worker's life (workflow step threads), closed by `close()` at its end.
    resources: dict = field(default_factory=dict)

    def resource(self, key: str, make):
        if key not in self.resources:
            self.resources[key] = make()
        return self.resources[key]

    def close(self) -> None:
        while self.resources:
            self.resources.popitem()[1].close()


class TaskHandler:
    task_type: str = ""
    queue: str = "default"
    priority: int = 100
    max_attempts: int | None = None  # None: settings.TRACKER["MAX_ATTEMPTS"]
    backoff_base: float | None = None  # seconds; None: settings
    backoff_cap: float | None = None
    lease_seconds: int | None = None
    # Batched handlers get a claimed batch in one transaction (`run_batch`), completed with one UPDATE.
    # None: batched when the class overrides `run_batch`. Long-running handlers (job slices) stay False.
    batched: bool | None = None
    # Long handlers (job slices) run after the short work claimed with them, so they do not hold it back.
    long_running: bool = False
    # At most `get_claim_limit()` tasks of this type per claim (workflow steps: as many as the consumer has step
    # threads, which run them all at once). Such types are listed in tracker.models.ONE_PER_CLAIM_TYPES.
    claim_limited: bool = False
    # `run` is called outside a transaction and completes its task itself (tracker.services.task_complete_many
    # in its last transaction), for handlers that must commit intermediate state (workflow steps).
    own_transaction: bool = False

    def decide(self, task) -> "TaskHandler":
        return self

    def validate(self, task) -> None:
        pass

    def run(self, task, ctx: RunContext) -> None:
        raise NotImplementedError

    # Handlers that run a claimed group of their tasks themselves (`run_group`), completing them on their own.
    def run_group(self, tasks: list, ctx: RunContext) -> list[tuple[object, BaseException]]:
        """Runs `tasks` (outside a transaction) and returns the (task, error) pairs to record as failures."""
        raise NotImplementedError

    def runs_group(self) -> bool:
        return type(self).run_group is not TaskHandler.run_group

    def get_claim_limit(self) -> int:
        return 1

    def run_batch(self, tasks: list, ctx: RunContext) -> None:
        """All of `tasks` in the caller's transaction; raising rolls the whole batch back and the worker
        then runs each task on its own. Override for set-based processing."""
        for task in tasks:
            self.validate(task)
            self.run(task, ctx)

    def is_batched(self) -> bool:
        if self.batched is not None:
            return self.batched
        return type(self).run_batch is not TaskHandler.run_batch

    # Settings with per-type overrides.
    def get_max_attempts(self) -> int:
        return self.max_attempts or settings.TRACKER["MAX_ATTEMPTS"]

    def get_lease_seconds(self) -> int:
        return self.lease_seconds or settings.TRACKER["LEASE_SECONDS"]

    def backoff(self, attempts: int) -> float:
        """Seconds before retry number `attempts`: exponential, capped, with up to 25% jitter on top
        (still capped)."""
        base = self.backoff_base or settings.TRACKER["BACKOFF_BASE_SECONDS"]
        cap = self.backoff_cap or settings.TRACKER["BACKOFF_CAP_SECONDS"]
        delay = min(cap, base * 2 ** max(0, attempts - 1))
        return min(cap, delay + random.uniform(0, delay * 0.25))


_registry: dict[str, TaskHandler] = {}


def register(*classes: type[TaskHandler]) -> None:
    """Registers one handler per task type; called from the apps' `ready()` (once per process). Assumes each
    `cls.task_type` is new: a type registered twice raises ImproperlyConfigured."""
    from tracker.models import ONE_PER_CLAIM_TYPES

    for cls in classes:
        if not cls.task_type:
            raise ImproperlyConfigured(f"{cls.__name__} has no task_type")
        if cls.claim_limited != (cls.task_type in ONE_PER_CLAIM_TYPES):
            raise ImproperlyConfigured(
                f"{cls.task_type}: claim_limited types are listed in tracker.models.ONE_PER_CLAIM_TYPES"
                " (their due index)"
            )
        if cls.task_type in _registry:
            raise ImproperlyConfigured(f"Task type {cls.task_type!r} is registered twice.")
        _registry[cls.task_type] = cls()


def register_modules(names: list[str]) -> None:
    """Registers the `TASK_HANDLERS` of each named module (settings.TRACKER["TASK_MODULES"]: the task types of
    the tests and the benchmarks)."""
    for name in names:
        register(*import_module(name).TASK_HANDLERS)


def get(task_type: str) -> TaskHandler:
    try:
        return _registry[task_type]
    except KeyError:
        raise UnknownTaskType(f"No handler registered for task type {task_type!r}.") from None


def all_types() -> list[str]:
    return sorted(_registry)
