"""GET /metrics: the Prometheus text exposition (shared/API.md, "Metrics"), built per scrape by prometheus-client
from what the database holds (tracker counters, jobs, staging entries), so every process answers the same figures.
Staff users (token or session), or `Authorization: Bearer <METRICS_TOKEN>` when that setting is set."""

import hmac

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from rest_framework.authentication import (
    BaseAuthentication,
    SessionAuthentication,
    TokenAuthentication,
)
from rest_framework.exceptions import (
    AuthenticationFailed,
    NotAuthenticated,
    PermissionDenied,
)
from rest_framework.views import APIView


class MetricsScraper:
    """Marks a request authenticated by METRICS_TOKEN (not a user)."""

    is_authenticated = True
    is_staff = False
    pk = None


class BearerMetricsToken(BaseAuthentication):
    def authenticate(self, request):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        token = settings.METRICS_TOKEN
        if not token or not hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode()):
            raise AuthenticationFailed("Invalid metrics token.")
        return MetricsScraper(), None

    def authenticate_header(self, request):
        return "Bearer"


def _tracker_families():
    from tracker import counters
    from tracker.models import Outcome, TaskQueue, TaskStatus, WorkerHeartbeat
    from tracker.services import queue_list
    from tracker.worker import stale_before

    tasks = GaugeMetricFamily("tracker_tasks", "Tasks now in each status.", labels=["queue", "task_type", "status"])
    counts = {(q, t, s): n for q, t, s, n in counters.status_counts()}
    for queue, task_type in sorted({(q, t) for q, t, _ in counts}):
        for status in TaskStatus.values:
            tasks.add_metric([queue, task_type, status], counts.get((queue, task_type, status), 0))
    yield tasks
    finished = CounterMetricFamily("tracker_tasks_finished", "Tasks finished, by outcome.",
                                   labels=["task_type", "outcome"])
    run = CounterMetricFamily("tracker_task_run_seconds", "Sum of finished tasks' run durations.",
                              labels=["task_type"])
    totals = {(t, o): (n, r) for t, o, n, r, _w in counters.all_time_totals(group_by=("task_type", "outcome"))}
    for task_type in sorted({t for t, _ in totals}):
        for outcome in Outcome.values:
            finished.add_metric([task_type, outcome], totals.get((task_type, outcome), (0, 0))[0])
        run.add_metric([task_type], sum(r for (t, _o), (_n, r) in totals.items() if t == task_type))
    yield finished
    yield run
    queues = queue_list()
    lag = GaugeMetricFamily("tracker_queue_lag_seconds", "Age of the oldest due task (0 when none).",
                            labels=["queue"])
    paused = GaugeMetricFamily("tracker_queue_paused", "1 when the queue is paused.", labels=["queue"])
    due = GaugeMetricFamily("tracker_queue_due", "Tasks due now.", labels=["queue"])
    paused_names = set(TaskQueue.objects.filter(paused=True).values_list("name", flat=True))
    for q in queues:
        lag.add_metric([q["name"]], q["oldest_due_seconds"] or 0.0)
        paused.add_metric([q["name"]], 1 if q["name"] in paused_names else 0)
        due.add_metric([q["name"]], q["due"])
    yield lag
    yield paused
    yield due
    alive = WorkerHeartbeat.objects.filter(beat_at__gte=stale_before()).count()
    yield GaugeMetricFamily("tracker_consumers_alive", "Consumer slots whose heartbeat is fresh.", value=alive)
    yield GaugeMetricFamily("tracker_consumers_wanted", "Consumer slots configured.",
                            value=settings.TRACKER["CONSUMERS"])


def _jobs_families():
    from django.db.models import Count

    from jobs import registry
    from jobs.models import Job, JobState

    family = GaugeMetricFamily("jobs", "Jobs in each state, by type.", labels=["job_type", "state"])
    counts = {(t, s): n for t, s, n in Job.objects.order_by().values_list("job_type", "state").annotate(n=Count("pk"))}
    for job_type in sorted(set(registry.all_types()) | {t for t, _ in counts}):
        for state in JobState.values:
            family.add_metric([job_type, state], counts.get((job_type, state), 0))
    yield family


def _recon_families():
    from django.db.models import Count

    from recon.models import StagingEntry, StagingStatus
    from recon.selectors import staging_entries_stuck

    family = GaugeMetricFamily("recon_staging_entries", "Staging entries in each status.", labels=["status"])
    counts = dict(StagingEntry.objects.order_by().values_list("status").annotate(n=Count("pk")))
    for status in StagingStatus.values:
        family.add_metric([status], counts.get(status, 0))
    yield family
    yield GaugeMetricFamily("recon_review_queue", "Entries the review queue shows: NEEDS_MANUAL_REVIEW, and PENDING "
                            "entries whose task FAILED or was CANCELLED (recon.selectors).",
                            value=counts.get(StagingStatus.NEEDS_MANUAL_REVIEW, 0) + staging_entries_stuck().count())


class _Collector:
    def collect(self):
        yield from _tracker_families()
        yield from _jobs_families()
        yield from _recon_families()


def exposition() -> bytes:
    """The metrics text, built now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)


class MetricsView(APIView):
    authentication_classes = [TokenAuthentication, BearerMetricsToken, SessionAuthentication]
    permission_classes = []
    throttle_classes = []
    schema = None

    def get(self, request):
        user = request.user
        if not user or not user.is_authenticated:
            raise NotAuthenticated()
        if not (isinstance(user, MetricsScraper) or user.is_staff):
            raise PermissionDenied("Metrics are for staff users and the metrics token.")
        return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
