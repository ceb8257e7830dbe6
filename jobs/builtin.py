"""Built-in job types, for demos and tests: startable by staff only, removed with JOBS_DEMO_TYPES=0. They show the handler contract (jobs.runtime): resume from the
checkpoint, one atomic block per unit of work ending with `ctx.checkpoint`, `should_stop()` between units."""

import datetime as dt
import time

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from jobs.registry import job_type
from jobs.runtime import JobContext


class CountdownParams(serializers.Serializer):
    steps = serializers.IntegerField(min_value=1, max_value=100_000, default=10)
    step_seconds = serializers.FloatField(min_value=0, max_value=60, default=1.0)
    fail_at = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None,
                                       help_text="Raise an error at this step (tests of FAILED and retry).")
    fail_attempts = serializers.IntegerField(min_value=1, default=1,
                                             help_text="Fail only while the job's attempt is at most this.")


@job_type("jobs.countdown", params=CountdownParams, demo=True)
def countdown(ctx: JobContext, params: dict) -> dict | None:
    """Counts `steps` steps of `step_seconds` each, checkpointing after every step."""
    steps = params["steps"]
    done = ctx.checkpoint_data.get("done", 0)
    if done == 0:
        ctx.log(f"countdown of {steps} steps started")
    while done < steps:
        if ctx.should_stop():
            return None
        time.sleep(params["step_seconds"])
        if params.get("fail_at") == done + 1 and ctx.attempt <= params["fail_attempts"]:
            raise RuntimeError(f"step {done + 1} failed on purpose")
        with transaction.atomic():
            ctx.log(f"step {done + 1} of {steps}", step=done + 1)
            ctx.checkpoint({"done": done + 1})
        done += 1
        ctx.progress(100 * done // steps, f"step {done} of {steps}")
    return {"steps": steps}


class ApprovalParams(serializers.Serializer):
    message = serializers.CharField(max_length=500, default="Please approve")
    timeout_seconds = serializers.FloatField(min_value=0.1, required=False, allow_null=True, default=None)


@job_type("jobs.approval_demo", params=ApprovalParams, demo=True)
def approval_demo(ctx: JobContext, params: dict) -> dict:
    """Waits for an `approve` or `reject` signal (or the timeout), then finishes with the decision."""
    ctx.progress(10, "waiting for approve or reject")
    got = ctx.wait_for_any("approve", "reject", timeout=params.get("timeout_seconds"))
    decision, payload = ("timeout", {}) if got is None else got
    ctx.log(f"decision: {decision}", decision=decision)
    return {"decision": decision, "payload": payload}


class SleepParams(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=30 * 24 * 3600, default=5)


@job_type("jobs.sleep_demo", params=SleepParams, demo=True)
def sleep_demo(ctx: JobContext, params: dict) -> dict:
    """Sleeps on a durable timer (no worker held), then finishes."""
    wake_at = ctx.checkpoint_data.get("wake_at")
    if wake_at is None:
        wake_at = (timezone.now() + dt.timedelta(seconds=params["seconds"])).isoformat()
        with transaction.atomic():
            ctx.checkpoint({"wake_at": wake_at})
        ctx.progress(10, f"sleeping until {wake_at}")
    ctx.sleep_until(parse_datetime(wake_at))
    ctx.log("woke up")
    return {"slept_until": wake_at, "woke_at": timezone.now().isoformat()}
