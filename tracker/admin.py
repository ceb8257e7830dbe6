"""The task console: find, inspect, retry and cancel tasks."""

import json
import uuid

from django.contrib import admin, messages
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from tracker import audit, registry, services
from tracker.admin_base import AuditedFSMAdminMixin
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


@admin.register(ProcessTracker)
class ProcessTrackerAdmin(AuditedFSMAdminMixin, admin.ModelAdmin):
    tenant_field = "tenant"  # tasks without a tenant (maintenance) are staff only
    fsm_fields = ["status"]
    list_display = ["task_id", "task_type", "status", "queue", "tenant", "attempts_shown", "age", "error_start"]
    list_filter = ["status", TaskTypeFilter, QueueFilter, ("created_at", admin.DateFieldListFilter)]
    search_fields = ["task_id"]  # see get_search_results: id or payload text
    search_help_text = "A task id, or text contained in the payload."
    live_refresh = True  # the list refreshes itself (templates/admin/change_list.html)
    ordering = ["-created_at"]
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    actions = ["retry_selected", "cancel_selected"]
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
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(task_id=uuid.UUID(term)), False
        except ValueError:
            return queryset.alias(payload_text=Cast("payload", TextField())).filter(
                payload_text__icontains=term), False

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
    list_display = ["slot", "worker_id", "alive", "beat_at", "started_at", "processed", "enqueued_at"]

    @admin.display(boolean=True)
    def alive(self, hb):
        from tracker.worker import stale_before

        return bool(hb.beat_at and hb.beat_at >= stale_before())

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
