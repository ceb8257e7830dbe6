"""The console's first page (the admin index): what is flowing and what is stuck, over the last hour, day or week.

Figures come from the tracker's counters (finished tasks per minute, status counts, queue samples), the review queue,
staging entries per day, jobs by state and the consumer slots; nothing scans the task table. The panel is
re-fetched every 10 s (`static/tracker/dashboard.js`, no build step, no CDN) and every figure links to the list
behind it.

Merchant users (not staff) see their merchants' figures only: tasks from the counters of their tenants, their
review queue, match rate and jobs; queues and consumer slots are tracker-wide, so they are shown to staff only."""

import datetime as dt
from urllib.parse import urlencode

from django.db import connection
from django.db.models import Count
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from tracker import access, counters, services, svg
from tracker.models import Outcome, QueueSample, TaskStatus

RANGES = {  # name: (span, bucket seconds, axis time format)
    "hour": (dt.timedelta(hours=1), 60, "%H:%M"),
    "day": (dt.timedelta(days=1), 3600, "%H:00"),  # hourly rows (tracker.counters.COUNTED)
    "week": (dt.timedelta(days=7), 3600, "%a %H:00"),
}
OUTCOME_STATUS = {
    Outcome.COMPLETED: TaskStatus.COMPLETED,
    Outcome.FAILED: TaskStatus.FAILED,
    Outcome.RETRIED: TaskStatus.RETRY,
    Outcome.CANCELLED: TaskStatus.CANCELLED,
}


def _url(name: str, **params) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return reverse(name) + (f"?{query}" if query else "")


def task_list(**params) -> str:
    return _url("admin:tracker_processtracker_changelist", **params)


def _tasks(tenants, since, step: int, fmt: str) -> dict:
    got = counters.series(since=since, step_seconds=step, tenants=tenants, by=("outcome", "task_type"))
    series = {o: got["outcome"].get(o, [0] * len(got["buckets"])) for o in Outcome.values}
    per = {60: "minute", 3600: "hour"}.get(step, f"{step // 60} minutes")
    table = {}
    for (outcome, task_type), (n, run, wait, run_max) in sorted(got["totals"].items()):
        row = table.setdefault(
            task_type,
            {
                "type": task_type,
                "url": task_list(task_type=task_type),
                "cells": {},
                "run": 0.0,
                "wait": 0.0,
                "count": 0,
                "run_max": 0.0,
            },
        )
        row["cells"][outcome] = {"n": n, "url": task_list(task_type=task_type, status__exact=OUTCOME_STATUS[outcome])}
        row["count"] += n
        row["run"] += run
        row["wait"] += wait
        row["run_max"] = max(row["run_max"], run_max)
    for row in table.values():
        row["cells"] = [
            row["cells"].get(o, {"n": 0, "url": task_list(task_type=row["type"], status__exact=OUTCOME_STATUS[o])})
            for o in Outcome.values
        ]
        row["avg_run"] = row["run"] / row["count"] if row["count"] else 0
        row["avg_wait"] = row["wait"] / row["count"] if row["count"] else 0
    return {
        "per": per,
        "by_outcome": svg.stacked_bars(
            buckets=got["buckets"],
            series=series,
            time_format=fmt,
            title=f"Tasks finished per {per} by outcome",
            links={o: task_list(status__exact=OUTCOME_STATUS[o]) for o in series},
        ),
        "by_type": svg.stacked_bars(
            buckets=got["buckets"],
            series=got["task_type"],
            time_format=fmt,
            title=f"Tasks finished per {per} by type",
            links={t: task_list(task_type=t) for t in got["task_type"]},
        ),
        "table": sorted(table.values(), key=lambda r: r["type"]),
        "outcomes": Outcome.values,
        "now": services.task_stats(tenants=tenants),
        "status_links": {s: task_list(status__exact=s) for s in TaskStatus.values},
    }


QUEUE_SAMPLES_SQL = f"""
SELECT date_bin(make_interval(secs => %s), minute, 'epoch'::timestamptz), queue, max(due), max(lag_seconds)
FROM {QueueSample._meta.db_table} WHERE minute >= %s GROUP BY 1, 2 ORDER BY 1, 2"""


def _queues(since, step: int, fmt: str) -> dict:
    rows = services.queue_list()
    for row in rows:
        row["url"] = _url("admin:tracker_processtracker_queues")
        row["due_url"] = task_list(queue=row["name"], status__exact="PENDING")
        row["running_url"] = task_list(queue=row["name"], status__exact="PROCESSING")
    start = dt.datetime.fromtimestamp((since.timestamp() // step) * step, tz=dt.UTC)
    with connection.cursor() as cursor:  # the largest sample of each bar (a range of tracker_queue_sample_key)
        cursor.execute(QUEUE_SAMPLES_SQL, [step, start])
        samples = cursor.fetchall()
    buckets, at, now = [], start, timezone.now()
    while at <= now:
        buckets.append(at)
        at += dt.timedelta(seconds=step)
    depth: dict[str, list[float]] = {}
    lag: dict[str, list[float]] = {}
    for minute, queue, due, lag_seconds in samples:
        i = int((minute.timestamp() - start.timestamp()) // step)
        if 0 <= i < len(buckets):
            row_depth = depth.setdefault(queue, [0] * len(buckets))
            row_lag = lag.setdefault(queue, [0] * len(buckets))
            row_depth[i], row_lag[i] = max(row_depth[i], due), max(row_lag[i], lag_seconds)
    links = {q["name"]: q["due_url"] for q in rows}
    return {
        "rows": rows,
        "depth": svg.stacked_bars(
            buckets=buckets,
            series=depth,
            links=links,
            time_format=fmt,
            title="Due tasks per queue (largest sample in each bar)",
        ),
        "lag": svg.stacked_bars(
            buckets=buckets,
            series=lag,
            links=links,
            time_format=fmt,
            unit="s",
            title="Queue lag (oldest due task, seconds)",
        ),
        "page": _url("admin:tracker_processtracker_queues"),
    }


def _review(tenants) -> dict:
    """The review queue's size and ageing (recon.reports.ageing: one query)."""
    from recon.models import StagingEntry
    from recon.reports import AGE_BUCKETS, ageing
    from recon.selectors import staging_entries_in_review

    entries = StagingEntry.objects.all()
    if tenants is not None:
        entries = entries.filter(account__merchant_id__in=sorted(tenants))
    now = timezone.now()
    counts = ageing(staging_entries_in_review(entries), now)
    changelist = "admin:recon_stagingentry_changelist"
    rows = []
    for name, lo, hi in AGE_BUCKETS:
        params = {"queue": "review", "created_at__lte": (now - dt.timedelta(days=lo)).isoformat()}
        if hi is not None:
            params["created_at__gt"] = (now - dt.timedelta(days=hi)).isoformat()
        rows.append({"name": name, "n": counts[name], "url": _url(changelist, **params)})
    return {
        "size": sum(counts.values()),
        "ageing": rows,
        "top": max([a["n"] for a in rows] + [1]),
        "url": _url(changelist, queue="review"),
        "stuck_url": _url(changelist, queue="stuck"),
    }


def _match_rate(tenants, days: int) -> list[dict]:
    """Per day of arrival over the last `days` days (recon.reports.match_rates_by_day), each linked to its
    entries."""
    from recon.models import StagingEntry
    from recon.reports import match_rates_by_day

    since = (timezone.now() - dt.timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    entries = StagingEntry.objects.all()
    if tenants is not None:
        entries = entries.filter(account__merchant_id__in=sorted(tenants))
    out = []
    for row in match_rates_by_day(entries, since=since):
        day = dt.date.fromisoformat(row["date"])
        rate = row["match_rate"]
        out.append(
            {
                **row,
                "day": day,
                "review": row["decided"] - row["matched"],
                "percent": None if rate is None else round(100 * rate, 1),
                "url": _url(
                    "admin:recon_stagingentry_changelist",
                    created_at__gte=day.isoformat(),
                    created_at__lt=(day + dt.timedelta(days=1)).isoformat(),
                ),
            }
        )
    return out


def _jobs(tenants, user) -> dict:
    from jobs import registry
    from jobs.api import visible_jobs
    from jobs.models import Job, JobState

    qs = visible_jobs(user, Job.objects.all())
    counts = {(t, s): n for t, s, n in qs.order_by().values_list("job_type", "state").annotate(n=Count("pk"))}
    types = sorted(set(registry.all_types()) | {t for t, _ in counts})
    changelist = "admin:jobs_job_changelist"
    rows = [
        {
            "type": t,
            "url": _url(changelist, job_type=t),
            "cells": [
                {"n": counts.get((t, s), 0), "url": _url(changelist, job_type=t, state__exact=s)}
                for s in JobState.values
            ],
        }
        for t in types
    ]
    return {
        "states": [
            {
                "name": s,
                "url": _url(changelist, state__exact=s),
                "n": sum(n for (_, st), n in counts.items() if st == s),
            }
            for s in JobState.values
        ],
        "rows": [r for r in rows if any(c["n"] for c in r["cells"])] or rows[:0],
    }


def _slots() -> list[dict]:
    from tracker.models import WorkerHeartbeat
    from tracker.worker import stale_before

    now = timezone.now()
    stale = stale_before()
    out = []
    minute = {w: n for w, n, *_ in counters.finished_totals(since=counters.minute(now), group_by=("worker",))}
    hour = {w: n for w, n, *_ in counters.finished_totals(since=now - dt.timedelta(hours=1), group_by=("worker",))}
    for hb in WorkerHeartbeat.objects.order_by("slot"):
        out.append(
            {
                "slot": hb.slot,
                "worker_id": hb.worker_id or "-",
                "alive": bool(hb.beat_at and hb.beat_at >= stale),
                "beat_at": hb.beat_at,
                "this_minute": minute.get(hb.worker_id, 0),
                "last_hour": hour.get(hb.worker_id, 0),
                "url": _url("admin:tracker_workerheartbeat_changelist"),
            }
        )
    return out


def panel_context(request) -> dict:
    """Everything the dashboard panel shows, for `request.user` and `?range=`."""
    name = request.GET.get("range") if request.GET.get("range") in RANGES else "hour"
    span, step, fmt = RANGES[name]
    now = timezone.now()
    since = now - span
    user = request.user
    tenants = access.policy().visible_tenants(user)
    ctx = {
        "range": name,
        "ranges": list(RANGES),
        "generated_at": now,
        "tasks": _tasks(tenants, since, step, fmt),
        "review": _review(tenants),
        "match_rate": _match_rate(tenants, 7 if name != "week" else 14),
        "jobs": _jobs(tenants, user),
        "staff": tenants is None,
    }
    if tenants is None:
        ctx["queues"] = _queues(since, step, fmt)
        ctx["slots"] = _slots()
    return ctx


def panel_view(request):
    """The dashboard panel alone (what the page re-fetches every 10 s)."""
    return TemplateResponse(request, "admin/dashboard_panel.html", panel_context(request))
