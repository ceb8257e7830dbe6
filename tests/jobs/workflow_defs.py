"""Workflows declared for the tests (imported by the tests, and by the cluster of the real-process tests through
env JOBS_MODULES)."""

import time

from django.db import transaction

from jobs.workflows import Step, Workflow, workflow
from jobs.workflows.engine import PermanentStepError, StepError

# Registered by jobs.registry.register_modules (conftest in the test process, JobsConfig.ready in the cluster).
WORKFLOWS: list[Workflow] = []


def _declare(*args, **kwargs) -> None:
    WORKFLOWS.append(workflow(*args, **kwargs))


def echo(ctx):
    return {"step": ctx.name, "parents": ctx.parents, "n": ctx.params.get("n", 0)}


def flaky(ctx):
    if ctx.attempt <= int(ctx.params.get("fail", 0)):
        raise StepError(f"attempt {ctx.attempt} fails")
    return {"attempt": ctx.attempt}


def permanent(ctx):
    raise PermanentStepError("cannot be fixed by retrying")


def gate(ctx):
    return {"go": bool(ctx.params.get("go"))}


_declare(
    "test.retries", version=1, steps=[Step("a", flaky, max_attempts=3, backoff=0.05), Step("b", echo, depends_on=["a"])]
)

_declare(
    "test.permanent",
    version=1,
    steps=[
        Step("a", echo),
        Step("bad", permanent, depends_on=["a"], max_attempts=5),
        Step("after_bad", echo, depends_on=["bad"]),
        Step("side", echo, depends_on=["a"]),
    ],
)

_declare(
    "test.condition",
    version=1,
    steps=[
        Step("gate", gate),
        Step("yes", echo, depends_on=["gate"], condition=lambda parents: parents["gate"]["go"]),
        Step("after_yes", echo, depends_on=["yes"]),
        Step("end", echo, depends_on=["after_yes", "gate"]),
    ],
)

_declare(
    "test.condition_raises",
    version=1,
    steps=[
        Step("gate", gate),
        Step("broken", echo, depends_on=["gate"], condition=lambda parents: parents["gate"]["missing"]),
        Step("after", echo, depends_on=["broken"]),
    ],
)


def approval(ctx):
    got = ctx.wait_for_any("approve", "reject", timeout=ctx.params.get("timeout"))
    return {"decision": got[0] if got else "timeout", "payload": got[1] if got else {}}


def nap(ctx):
    import datetime as dt

    from django.utils import timezone
    from django.utils.dateparse import parse_datetime

    when = ctx.checkpoint_data.get("until")
    if when is None:
        when = (timezone.now() + dt.timedelta(seconds=float(ctx.params.get("nap", 0.3)))).isoformat()
        with transaction.atomic():
            ctx.checkpoint({"until": when})
    ctx.sleep_until(parse_datetime(when))
    return {"slept_until": when}


_declare(
    "test.signals",
    version=1,
    steps=[
        Step("prepare", echo),
        Step("approval", approval, depends_on=["prepare"]),
        Step("nap", nap, depends_on=["prepare"]),
        Step(
            "close",
            echo,
            depends_on=["approval", "nap"],
            condition=lambda parents: parents["approval"]["decision"] == "approve",
        ),
    ],
)


def record_effect(job_id, name: str, attempt: int) -> None:
    """The step's effect: a row (a log event of the run marked `effect`)."""
    from jobs.models import JobEvent

    JobEvent.objects.create(job_id=job_id, kind="log", data={"effect": name, "attempt": attempt})


def effect(ctx):
    """Applies its effect once (the effect row and the checkpoint commit together; a later attempt sees the
    checkpoint and does not apply it again), then sleeps: a crash window after the effect."""
    if not ctx.checkpoint_data.get("applied"):
        with transaction.atomic():
            record_effect(ctx.job_id, ctx.name, ctx.attempt)
            ctx.checkpoint({"applied": True})
    deadline = time.monotonic() + float(ctx.params.get("sleep", 0))
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return {"step": ctx.name, "attempt": ctx.attempt}


_declare(
    "test.effects",
    version=1,
    steps=[Step("first", effect, max_attempts=5), Step("second", effect, depends_on=["first"], max_attempts=5)],
)


def join_parent(ctx):
    """Both parents wait for the same moment, then finish together (the join race)."""
    start_at = float(ctx.params.get("finish_at", 0))
    while time.time() < start_at:
        time.sleep(0.001)
    return {"step": ctx.name, "returned_at": time.time()}


_declare(
    "test.join_race",
    version=1,
    steps=[Step("left", join_parent), Step("right", join_parent), Step("join", echo, depends_on=["left", "right"])],
)


def slow(ctx):
    deadline = time.monotonic() + float(ctx.params.get("sleep", 0.5))
    while time.monotonic() < deadline:
        if ctx.should_stop():
            return None
        time.sleep(0.02)
    return {"step": ctx.name}


_declare("test.slow", version=1, steps=[Step("one", slow), Step("two", slow, depends_on=["one"])])

_declare("test.versioned", version=1, steps=[Step("old", echo)])
_declare("test.versioned", version=2, steps=[Step("new_a", echo), Step("new_b", echo, depends_on=["new_a"])])

_declare("test.timeout", version=1, steps=[Step("slow", slow, timeout=0.1, max_attempts=2, backoff=0)])


# Steps that meet at a barrier: they complete only when all of them run at the same time (a consumer that ran a
# claimed batch of them one after another would time each out at the barrier).
BARRIER: dict = {}


def meet(ctx):
    import threading

    barrier = BARRIER.setdefault(ctx.job_id, threading.Barrier(int(ctx.params.get("parties", 4))))
    barrier.wait(timeout=5)
    return {"met": True}


_declare(
    "test.barrier",
    version=1,
    steps=[Step(f"p{i}", meet, max_attempts=1) for i in range(4)] + [Step("end", echo, depends_on=["p0", "p1"])],
)
