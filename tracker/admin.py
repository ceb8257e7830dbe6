"""The task console: find, inspect, retry and cancel tasks."""

import datetime as dt
import json
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.module_loading import import_string
from django.utils.timesince import timesince

from tracker import access, audit, counters, registry, services
from tracker.admin_base import AuditedFSMAdminMixin
from tracker.errors import InvalidBulkRequest
from tracker.models import ProcessTracker, WorkerHeartbeat
from tracker.pagination import CappedCountPaginator


class RegistryFilter(admin.SimpleListFilter):
    """Filter choices from the task-type registry, not from a DISTINCT over millions of rows."""

    field = ""

    def lookups(self, request, model_admin):
        handlers = [registry.get(t) for t in registry.all_types()]
        values = sorted({h.task_type if self.field == "task_type" else h.queue for h in handlers})
        return [(v, v) for v in values]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class TaskTypeFilter(RegistryFilter):
    title = parameter_name = field = "task_type"


class QueueFilter(RegistryFilter):
    title = parameter_name = field = "queue"


# Changelist query parameters that a bulk filter (shared/API.md) can express.
CHANGELIST_TO_BULK = {"status__exact": "status", "status": "status", "task_type": "task_type", "queue": "queue",
                      "created_at__gte": "created_after", "created_at__lt": "created_before"}


@admin.register(ProcessTracker)
class ProcessTrackerAdmin(AuditedFSMAdminMixin, admin.ModelAdmin):
    tenant_field = "tenant"  # tasks without a tenant (maintenance) are staff only
    fsm_fields = ["status"]
    list_display = ["task_id", "task_type", "status", "queue", "tenant", "attempts_shown", "age", "error_start"]
    list_filter = ["status", TaskTypeFilter, QueueFilter, ("created_at", admin.DateFieldListFilter)]
    search_fields = ["task_id"]  # see get_search_results: id or payload text
    search_help_text = "A task id, a staging entry, job or upload id (found at once), or text in the payload."
    live_refresh = True  # the list refreshes itself (templates/admin/change_list.html)
    ordering = ["-created_at"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    actions = ["retry_selected", "cancel_selected"]
    change_list_template = "admin/tracker/processtracker/change_list.html"
    readonly_fields = ["task_id", "task_type", "queue", "priority", "tenant", "status", "attempts", "max_attempts",
                       "run_after", "lease_expires_at", "locked_by", "dedupe_key", "created_at", "updated_at",
                       "processing_started_at", "completed_at", "last_error", "payload_pretty", "traceback",
                       "history"]
    fieldsets = [
        (None, {"fields": ["task_id", "task_type", "status", "queue", "priority", "tenant", "dedupe_key"]}),
        ("Attempts", {"fields": ["attempts", "max_attempts", "run_after", "locked_by", "lease_expires_at",
                                 "processing_started_at", "completed_at", "created_at", "updated_at"]}),
        ("Payload", {"fields": ["payload_pretty"]}),
        ("Last error", {"fields": ["last_error", "traceback"]}),
        ("History", {"fields": ["history"]}),
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_search_results(self, request, queryset, search_term):
        return services.task_search(queryset, search_term), False

    # --- bulk actions on the whole filter, and the queue page ---------------------------------------------

    def get_urls(self):
        urls = [path("bulk/", self.admin_site.admin_view(self.bulk_view), name="tracker_processtracker_bulk"),
                path("queues/", self.admin_site.admin_view(self.queues_view), name="tracker_processtracker_queues")]
        return urls + super().get_urls()

    def _bulk_filter(self, params) -> dict | None:
        """The changelist's filters as a bulk filter; None when the list uses anything a bulk filter cannot say
        (a search, other lookups) or no filter at all."""
        flt = {}
        for param, value in params.items():
            if param in ("o", "p", "_changelist_filters", "action") or not value:
                continue
            key = CHANGELIST_TO_BULK.get(param)
            if key is None:
                return None
            flt[key] = value
        return flt or None

    def _bulk_counts(self, request, flt: dict) -> dict[str, int]:
        tenants = access.operable_tenants(request.user)
        out = {}
        for action in services.BULK_ACTIONS:
            legal = services.BULK_LEGAL[action]
            if "status" in flt and flt["status"] not in legal:
                out[action] = 0
                continue
            out[action] = services.task_bulk_count(filter=flt, tenants=tenants, statuses=legal)
        return out

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        flt = self._bulk_filter(request.GET)
        if flt is not None and self.has_change_permission(request):
            try:
                clean = services.task_bulk_clean(action="retry", filter=flt)
            except InvalidBulkRequest:
                clean = None
            if clean is not None:
                counts = self._bulk_counts(request, clean)
                base = reverse("admin:tracker_processtracker_bulk")
                extra_context["bulk_links"] = [
                    {"action": a, "n": n, "url": f"{base}?{urlencode({**request.GET.dict(), 'action': a})}"}
                    for a, n in counts.items()]
        return super().changelist_view(request, extra_context=extra_context)

    def bulk_view(self, request):
        """Confirmation of "Retry/Cancel all N matching" (GET), then the job that does it (POST)."""
        if not self.has_change_permission(request):
            if request.method == "POST":
                raise PermissionDenied
            self.message_user(request, "Only operators may retry or cancel tasks.", messages.ERROR)
            return redirect("admin:tracker_processtracker_changelist")
        params = request.POST if request.method == "POST" else request.GET
        action = params.get("action")
        flt = self._bulk_filter({k: v for k, v in params.items() if k != "csrfmiddlewaretoken"})
        try:
            clean = services.task_bulk_clean(action=action, filter=flt or {})
        except InvalidBulkRequest as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return redirect("admin:tracker_processtracker_changelist")
        tenants = access.operable_tenants(request.user)
        if tenants is not None and not tenants:
            raise PermissionDenied
        if request.method == "POST":
            job = import_string(settings.TRACKER["BULK_STARTER"])(action=action, filter=clean, user=request.user)
            self.message_user(request, f"Bulk {action} started as job {job.pk}: it runs in chunks; its page shows "
                                       f"the progress and, at the end, how many changed and how many were skipped.")
            return redirect("admin:jobs_job_change", job.pk)
        matched = services.task_bulk_count(filter=clean, tenants=tenants)
        counts = self._bulk_counts(request, clean)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": f"Bulk {action}",
                   "action": action, "filter": clean, "matched": matched, "legal": counts[action],
                   "params": [(k, v) for k, v in params.items() if k not in ("csrfmiddlewaretoken",)],
                   "back": reverse("admin:tracker_processtracker_changelist") + "?" + urlencode(
                       {k: v for k, v in params.items() if k != "action"})}
        return TemplateResponse(request, "admin/tracker/processtracker/bulk_confirm.html", context)

    def queues_view(self, request):
        """Every queue that has tasks or is paused, with pause and resume (staff only)."""
        if request.method == "POST":
            if not request.user.is_staff:
                raise PermissionDenied
            name, op = request.POST.get("queue", ""), request.POST.get("op")
            if name and op in ("pause", "resume"):
                services.queue_set_paused(name=name, paused=op == "pause", by=request.user)
                self.message_user(request, f"Queue {name} {'paused' if op == 'pause' else 'resumed'}.")
            return redirect("admin:tracker_processtracker_queues")
        rows = services.queue_list(tenants=access.policy().visible_tenants(request.user))
        changelist = reverse("admin:tracker_processtracker_changelist")
        for row in rows:
            row["due_url"] = f"{changelist}?{urlencode({'queue': row['name'], 'status__exact': 'PENDING'})}"
            row["running_url"] = f"{changelist}?{urlencode({'queue': row['name'], 'status__exact': 'PROCESSING'})}"
            row["all_url"] = f"{changelist}?{urlencode({'queue': row['name']})}"
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "Queues",
                   "queues": rows, "can_pause": request.user.is_staff}
        return TemplateResponse(request, "admin/tracker/queues.html", context)

    @admin.display(description="attempts")
    def attempts_shown(self, task):
        return f"{task.attempts}/{task.max_attempts}"

    @admin.display(description="age", ordering="created_at")
    def age(self, task):
        return timesince(task.created_at, timezone.now())

    @admin.display(description="last error")
    def error_start(self, task):
        return (task.last_error[:80] + "…") if len(task.last_error) > 80 else task.last_error

    @admin.display(description="payload")
    def payload_pretty(self, task):
        return format_html("<pre>{}</pre>", json.dumps(task.payload, indent=2, sort_keys=True, default=str))

    @admin.display(description="traceback")
    def traceback(self, task):
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", task.error_details or "-")

    @admin.display(description="transitions")
    def history(self, task):
        rows = audit.history(task)
        if not rows:
            return "-"
        body = format_html_join("", "<tr><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td></tr>",
                                ((r.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], r.from_status, r.to_status, r.by,
                                  r.reason[:300]) for r in rows))
        return format_html("<table><tr><th>at</th><th>change</th><th>by</th><th>reason</th></tr>{}</table>", body)

    def _act(self, request, queryset, action: str):
        done, skipped = services.task_act_many(queryset=queryset, action=action, by=request.user)
        self.message_user(request, f"{action.capitalize()}: {done} task(s) done, {skipped} skipped "
                                   f"(not in a state that allows it).",
                          messages.SUCCESS if done else messages.WARNING)

    @admin.action(permissions=["change"], description="Retry selected tasks (FAILED or CANCELLED)")
    def retry_selected(self, request, queryset):
        self._act(request, queryset, "retry")

    @admin.action(permissions=["change"], description="Cancel selected tasks (PENDING or RETRY)")
    def cancel_selected(self, request, queryset):
        self._act(request, queryset, "cancel")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    staff_only = True
    list_display = ["cluster", "host", "cluster_pid", "slot", "worker_id", "alive", "beat_at", "started_at",
                    "finished_last_minute", "finished_last_hour", "enqueued_at"]
    list_filter = ["host"]

    def changelist_view(self, request, extra_context=None):
        """Throughput per consumer from the finished-task counters (keyed by worker), read once per page."""
        now = timezone.now()
        self._minute = {w: n for w, n, *_ in counters.finished_totals(
            since=counters.minute(now - dt.timedelta(minutes=1)), group_by=("worker",))}
        self._hour = {w: n for w, n, *_ in counters.finished_totals(since=now - dt.timedelta(hours=1),
                                                                           group_by=("worker",))}
        return super().changelist_view(request, extra_context)

    @admin.display(description="finished (this and last minute)")
    def finished_last_minute(self, hb):
        return getattr(self, "_minute", {}).get(hb.worker_id, 0)

    @admin.display(description="finished (last hour)")
    def finished_last_hour(self, hb):
        return getattr(self, "_hour", {}).get(hb.worker_id, 0)

    @admin.display(boolean=True)
    def alive(self, hb):
        from tracker.worker import stale_before

        return bool(hb.worker_id and hb.beat_at and hb.beat_at >= stale_before())

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
