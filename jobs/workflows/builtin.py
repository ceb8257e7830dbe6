"""The built-in workflow `jobs.diamond` (shared/API.md), for demos and tests: start; left and right (each after
start); join (after both)."""

import time

from rest_framework import serializers

from jobs.workflows.declare import Step, workflow
from jobs.workflows.engine import StepError


class DiamondParams(serializers.Serializer):
    sleep_seconds = serializers.FloatField(min_value=0, max_value=3600, default=0)
    fail_attempts = serializers.DictField(
        child=serializers.IntegerField(min_value=0),
        default=dict,
        help_text="Step name -> n: that step fails its first n attempts.",
    )
    max_attempts = serializers.IntegerField(min_value=1, max_value=10, default=3)

    def validate_fail_attempts(self, value):
        unknown = sorted(set(value) - {"start", "left", "right", "join"})
        if unknown:
            raise serializers.ValidationError(f"Unknown step(s): {', '.join(unknown)}.")
        return value


def diamond_step(ctx) -> dict | None:
    """Sleeps `sleep_seconds` (checking for stop), fails its first `fail_attempts[name]` attempts, returns which
    parents' results it received."""
    deadline = time.monotonic() + float(ctx.params.get("sleep_seconds") or 0)
    while time.monotonic() < deadline:
        if ctx.should_stop():
            return None
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    if ctx.attempt <= int((ctx.params.get("fail_attempts") or {}).get(ctx.name, 0)):
        raise StepError(f"step {ctx.name} fails attempt {ctx.attempt} on purpose")
    return {"step": ctx.name, "parents": sorted(ctx.parents)}


def _max_attempts(params: dict) -> int:
    return int(params.get("max_attempts") or 3)


DIAMOND = workflow(
    "jobs.diamond",
    version=1,
    params=DiamondParams,
    demo=True,
    description="Demo workflow: start; left and right in parallel; join.",
    steps=[
        Step("start", diamond_step, max_attempts=_max_attempts, backoff=1.0),
        Step("left", diamond_step, depends_on=["start"], max_attempts=_max_attempts, backoff=1.0),
        Step("right", diamond_step, depends_on=["start"], max_attempts=_max_attempts, backoff=1.0),
        Step("join", diamond_step, depends_on=["left", "right"], max_attempts=_max_attempts, backoff=1.0),
    ],
)
