"""Jobs settings: `settings.JOBS` (a dict) overrides, else environment variables, else defaults."""

import os

from django.conf import settings

DEFAULTS = {
    # Wall-clock budget of one slice (one JOB_RUN task). Keep it well under django-q2's `timeout` minus the
    # tracker's CONSUMER_SLICE_SECONDS: a slice that runs over is killed by django-q2.
    "SLICE_SECONDS": ("JOBS_SLICE_SECONDS", 20.0),
    # How often `should_stop()` re-reads the job's state from the database (seconds).
    "STOP_CHECK_SECONDS": ("JOBS_STOP_CHECK_SECONDS", 1.0),
    # SSE keep-alive comment interval when idle (seconds).
    "KEEPALIVE_SECONDS": ("JOBS_KEEPALIVE_SECONDS", 15.0),
    # How long the per-process LISTEN connection of the event streams stays open with no stream (seconds).
    "HUB_LINGER_SECONDS": ("JOBS_HUB_LINGER_SECONDS", 30.0),
    # Minimum interval between two progress events of the same job with the same percentage (seconds).
    "PROGRESS_EVERY_SECONDS": ("JOBS_PROGRESS_EVERY_SECONDS", 1.0),
}


def get(name: str) -> float:
    overrides = getattr(settings, "JOBS", {}) or {}
    if name in overrides:
        return overrides[name]
    env, default = DEFAULTS[name]
    return float(os.environ.get(env, default))
