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
    # Open event streams one user may hold in one server process (0: no cap); one more answers 429.
    "STREAMS_PER_USER": ("JOBS_STREAMS_PER_USER", 20),
    # How long the event streams' hub (its LISTEN and reader connections) stays up with no stream open (seconds).
    "HUB_LINGER_SECONDS": ("JOBS_HUB_LINGER_SECONDS", 30.0),
    # Minimum interval between two progress events of the same job with the same percentage (seconds).
    "PROGRESS_EVERY_SECONDS": ("JOBS_PROGRESS_EVERY_SECONDS", 1.0),
    # The demo job types (jobs.builtin; staff only): 0 removes them.
    "DEMO_TYPES": ("JOBS_DEMO_TYPES", 1),
    # Unfinished personal jobs (no merchant) a non-staff user may have at once; one more is a 429.
    "PERSONAL_MAX_PER_USER": ("JOBS_PERSONAL_MAX_PER_USER", 3),
    # Tracker priority of the run tasks of personal and demo jobs (lower runs first): after staging entries
    # (150), so they never hold back the main path; merchant jobs (imports, period closes) run at 100.
    "SIDE_PRIORITY": ("JOBS_SIDE_PRIORITY", 200),
    # Step threads per consumer: a claim takes at most this many workflow step tasks, and the consumer runs them
    # all at once, one thread (and one database connection) each (docs/workflows.md, "How steps run").
    "WORKFLOW_STEP_THREADS": ("JOBS_WORKFLOW_STEP_THREADS", 64),
}


def get(name: str) -> float:
    overrides = getattr(settings, "JOBS", {}) or {}
    if name in overrides:
        return overrides[name]
    env, default = DEFAULTS[name]
    return float(os.environ.get(env, default))
