"""Reads of workflow runs: the analytics of GET /api/workflows/stats/, the admin's analytics page and the
`workflows_stats` command (one selector for all three)."""

import datetime as dt

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from jobs.models import JobState, StepState, WorkflowStep


def workflow_stats(*, jobs, since: dt.datetime | None = None, workflow: str | None = None) -> dict:
    """Runs created since `since` (default 24 h ago) among `jobs` (a Job queryset: the caller's scope), by
    state; their steps by state; steps retrying now and steps that ran out of attempts; the ten slowest steps
    (by p95 duration of the attempts that finished since `since`)."""
    since = since or timezone.now() - dt.timedelta(hours=24)
    runs = jobs.filter(workflow_version__isnull=False, created_at__gte=since)
    if workflow:
        runs = runs.filter(job_type=workflow)
    by_run = {s: 0 for s in JobState.values}
    by_run.update(dict(runs.values_list("state").annotate(n=Count("pk")).order_by()))
    steps = WorkflowStep.objects.filter(job__in=runs.values("pk"))
    by_step = {s: 0 for s in StepState.values}
    by_step.update(dict(steps.values_list("state").annotate(n=Count("pk")).order_by()))
    retrying = steps.filter(state=StepState.RETRY).count()
    exhausted = steps.filter(state=StepState.FAILED).count()
    finished = (WorkflowStep.objects.filter(job__in=jobs.filter(workflow_version__isnull=False).values("pk"),
                                            finished_at__gte=since, state=StepState.COMPLETED,
                                            duration_ms__isnull=False))
    if workflow:
        finished = finished.filter(job__job_type=workflow)
    sql, params = finished.values("job__job_type", "name", "duration_ms", "attempts").query.sql_with_params()
    # Named SQL: slowest_steps -- percentiles of step durations per (workflow, step), highest p95 first.
    slowest_sql = f"""
        SELECT f.job_type, f.name, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY f.duration_ms),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY f.duration_ms), max(f.duration_ms), avg(f.attempts)
        FROM ({sql}) AS f(job_type, name, duration_ms, attempts)
        GROUP BY f.job_type, f.name ORDER BY 5 DESC, 1, 2 LIMIT 10"""
    with connection.cursor() as cursor:
        cursor.execute(slowest_sql, params)
        rows = cursor.fetchall()
    return {
        "since": since,
        "runs": by_run,
        "steps": by_step,
        "retrying": retrying,
        "exhausted": exhausted,
        "slowest_steps": [{"workflow": r[0], "step": r[1], "runs": r[2], "p50_ms": round(r[3], 1),
                           "p95_ms": round(r[4], 1), "max_ms": r[5], "avg_attempts": round(float(r[6]), 2)}
                          for r in rows],
    }
