"""The jobs console: a list with progress bars and state filters that refreshes itself (`live_refresh`); a change
page with one truth: its title, panel (state, progress, step, buttons) and fields are server-rendered parts that
the page re-fetches whenever the job's event stream (the API's SSE endpoint, session auth) reports a change, and
its log is exactly the job's stored events, in order, replayed and followed by id (static/jobs/job_page.js).
Buttons call the services (pause, resume, cancel, retry, and the signals a waiting job expects)."""

import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from config.errors import AppError
from jobs import admin_workflows, registry, services
from jobs.models import ACTIVE_STATES, TERMINAL_STATES, Job, JobEvent, JobSignal, JobState
from tracker import audit
from tracker.admin_base import ReadOnlyAdmin
from tracker.pagination import CappedCountPaginator

LOG_EVENTS = 500  # the job page's log replays at most this many of the latest stored events
STATE_COLOURS = {
    "CREATED": "#777",
    "RUNNING": "#2a7ae2",
    "WAITING": "#b8860b",
    "PAUSED": "#8a6d3b",
    "COMPLETED": "#2e8b57",
    "FAILED": "#c0392b",
    "CANCELLED": "#555",
}
ACTIONS = {  # admin button/action -> (service, legal source states, past tense)
    "pause": (services.job_pause, [JobState.RUNNING], "paused"),
    "resume": (services.job_resume, [JobState.PAUSED], "resumed"),
    "cancel": (services.job_cancel, list(ACTIVE_STATES), "cancelled"),
    "retry": (services.job_retry, [JobState.FAILED], "retried"),
}


def progress_bar(pct: int, state: str) -> str:
    colour = STATE_COLOURS.get(state, "#2a7ae2")
    return format_html(
        '<div class="job-bar" style="display:inline-block;width:120px;height:10px;background:#e5e5e5;'
        'border-radius:5px;overflow:hidden;vertical-align:middle"><div style="width:{}%;height:100%;'
        'background:{}"></div></div> <span style="font-size:11px">{}%</span>',
        pct,
        colour,
        pct,
    )


class JobTypeFilter(admin.SimpleListFilter):
    """Choices from the job-type registry, not a DISTINCT over the table."""

    title = "job type"
    parameter_name = "job_type"

    def lookups(self, request, model_admin):
        return [(t, t) for t in registry.all_types()]

    def queryset(self, request, queryset):
        return queryset.filter(job_type=self.value()) if self.value() else queryset


class JobSignalInline(admin.TabularInline):
    model = JobSignal
    extra = 0
    can_delete = False
    fields = ["name", "payload", "sent_by", "created_at", "consumed_at"]
    readonly_fields = fields
    ordering = ["-id"]

    @admin.display(description="data")
    def data_shown(self, event):
        return json.dumps(event.data, sort_keys=True, ensure_ascii=False, default=str)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    tenant_field, tenant_owner_field = "merchant_id", "owner"  # jobs without a merchant are their owner's
    list_display = [
        "job_id",
        "job_type",
        "state_badge",
        "progress_shown",
        "step",
        "merchant_id",
        "owner",
        "attempts",
        "created_at",
    ]
    list_filter = ["state", JobTypeFilter, ("created_at", admin.DateFieldListFilter)]
    list_select_related = ["owner"]
    search_fields = ["=job_id", "=merchant_id"]
    search_help_text = "A job id or a merchant id."
    ordering = ["-created_at"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50
    live_refresh = True
    actions = ["pause_selected", "resume_selected", "cancel_selected", "retry_selected"]
    change_form_template = "admin/jobs/job/change_form.html"
    inlines = [JobSignalInline]
    fieldsets = [
        (None, {"fields": ["job_id", "job_type", "schema_version", "state", "merchant_id", "owner"]}),
        (
            "Progress",
            {
                "fields": [
                    "progress",
                    "step",
                    "attempts",
                    "slices",
                    "heartbeat_at",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "updated_at",
                ]
            },
        ),
        (
            "Data",
            {
                "fields": [
                    "params_pretty",
                    "checkpoint_pretty",
                    "result_pretty",
                    "wait_signal",
                    "wake_at",
                    "run_task_link",
                ]
            },
        ),
        ("Error", {"fields": ["error", "error_details"], "classes": ["collapse"]}),
        ("History", {"fields": ["history"]}),
    ]
    readonly_fields = [
        "job_id",
        "job_type",
        "schema_version",
        "state",
        "merchant_id",
        "owner",
        "progress",
        "step",
        "attempts",
        "slices",
        "heartbeat_at",
        "created_at",
        "started_at",
        "finished_at",
        "updated_at",
        "params_pretty",
        "checkpoint_pretty",
        "result_pretty",
        "wait_signal",
        "wake_at",
        "run_task_link",
        "error",
        "error_details",
        "history",
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # --- columns -------------------------------------------------------------------------------------
    @admin.display(description="state", ordering="state")
    def state_badge(self, job):
        return format_html('<b style="color:{}">{}</b>', STATE_COLOURS.get(job.state, "#000"), job.state)

    @admin.display(description="progress", ordering="progress")
    def progress_shown(self, job):
        return progress_bar(job.progress, job.state)

    def _pretty(self, value):
        return format_html(
            '<pre style="white-space:pre-wrap;margin:0">{}</pre>',
            json.dumps(value, indent=2, sort_keys=True, default=str),
        )

    @admin.display(description="params")
    def params_pretty(self, job):
        return self._pretty(job.params)

    @admin.display(description="checkpoint")
    def checkpoint_pretty(self, job):
        return self._pretty(job.checkpoint)

    @admin.display(description="result")
    def result_pretty(self, job):
        return self._pretty(job.result)

    @admin.display(description="run task")
    def run_task_link(self, job):
        if not job.run_task_id:
            return "-"
        url = reverse("admin:tracker_processtracker_change", args=[job.run_task_id])
        return format_html('<a href="{}">{}</a>', url, job.run_task_id)

    @admin.display(description="transitions")
    def history(self, job):
        rows = [
            format_html(
                "<tr><td>{}</td><td>{} &rarr; {}</td><td>{}</td><td>{}</td></tr>",
                t.at.strftime("%Y-%m-%d %H:%M:%S"),
                t.from_status,
                t.to_status,
                t.by,
                t.reason,
            )
            for t in audit.history(job)
        ]
        return format_html("<table>{}</table>", mark_safe("".join(rows))) if rows else "-"  # rows are escaped

    def get_fieldsets(self, request, obj=None):
        """The Error section is open on a failed job (collapsed elsewhere)."""
        if obj is not None and obj.state == JobState.FAILED:
            return [
                (name, {**opts, "classes": []}) if name == "Error" else (name, opts) for name, opts in self.fieldsets
            ]
        return self.fieldsets

    # --- change page: live parts, log and buttons ----------------------------------------------------
    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        job = Job.objects.filter(pk=object_id).first() if _is_uuid(object_id) else None
        if job is not None:
            # The log replays the last LOG_EVENTS stored events (all of them for most jobs) from the stream.
            before = list(
                JobEvent.objects.filter(job=job)
                .order_by("-id")
                .values_list("id", flat=True)[LOG_EVENTS : LOG_EVENTS + 1]
            )
            replay_from = before[0] if before else 0
            extra_context.update(
                {
                    "job": job,
                    "job_bar_colour": STATE_COLOURS.get(job.state, "#2a7ae2"),
                    "job_events_url": f"/api/jobs/{job.pk}/events/?last_event_id={replay_from}",
                    "job_events_hidden": JobEvent.objects.filter(job=job, id__lte=replay_from).count() if before else 0,
                    "job_events_list_url": reverse("admin:jobs_jobevent_changelist") + f"?q={job.pk}",
                    "job_action_url": reverse("admin:jobs_job_act", args=[job.pk]),
                    "job_can_change": self.has_change_permission(request, job),
                    "job_waiting_for": job.wait_signal.split(",")
                    if job.state == JobState.WAITING and job.wait_signal
                    else [],
                    "job_actions": [(name, name in self._legal_now(job)) for name in ACTIONS],
                    "job_terminal": job.state in TERMINAL_STATES,
                    "workflow_panel": admin_workflows.run_panel(request, job),
                    "show_save": False,
                    "show_save_and_continue": False,
                    "show_save_and_add_another": False,
                    "show_delete": False,
                }
            )
        return super().change_view(request, object_id, form_url, extra_context)

    @staticmethod
    def _legal_now(job: Job) -> set[str]:
        return {name for name, (_, legal, _) in ACTIONS.items() if job.state in legal}

    def get_urls(self):
        return [
            path("<uuid:job_id>/act/", self.admin_site.admin_view(self.act_view), name="jobs_job_act"),
            *super().get_urls(),
        ]

    def act_view(self, request, job_id):
        """POST `action` (pause, resume, cancel, retry, or `signal:<name>`): calls the service."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = Job.objects.filter(pk=job_id).first()
        if job is None:
            self.message_user(request, "Job not found.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:jobs_job_changelist"))
        if not self.has_change_permission(request, job):
            raise PermissionDenied
        name = request.POST.get("action", "")
        try:
            if name.startswith("signal:"):
                signal = name.split(":", 1)[1].strip()
                if not signal:
                    raise AppError("A signal name is required.")
                confirm = (
                    (registry.get(job.job_type).signal_views or {}).get(signal)
                    if job.job_type in registry.all_types()
                    else None
                )
                if confirm:  # the job type confirms this signal on its own page first
                    return HttpResponseRedirect(reverse(confirm, args=[job.pk]))
                services.job_signal(job_id=job.pk, name=signal, payload={"via": "admin"}, by=request.user)
                self.message_user(request, f"Signal {signal!r} sent.", messages.SUCCESS)
            elif name in ACTIONS:
                ACTIONS[name][0](job_id=job.pk, by=request.user, reason=f"admin: {name}")
                self.message_user(request, f"Job {ACTIONS[name][2]}.", messages.SUCCESS)
            else:
                raise AppError(f"Unknown action {name!r}.")
        except AppError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))

    # --- list actions --------------------------------------------------------------------------------
    def _act_many(self, request, queryset, name):
        service, legal, done_word = ACTIONS[name]
        total = queryset.count()
        done = 0
        for job_id in queryset.filter(state__in=legal).values_list("job_id", flat=True):
            try:
                service(job_id=job_id, by=request.user, reason=f"admin: {name}")
                done += 1
            except AppError:
                pass  # changed state since we looked
        level = messages.SUCCESS if done else messages.WARNING
        self.message_user(
            request, f"{done} job(s) {done_word}; {total - done} skipped (not in a state that allows it).", level
        )

    @admin.action(permissions=["change"], description="Pause selected running jobs")
    def pause_selected(self, request, queryset):
        self._act_many(request, queryset, "pause")

    @admin.action(permissions=["change"], description="Resume selected paused jobs")
    def resume_selected(self, request, queryset):
        self._act_many(request, queryset, "resume")

    @admin.action(permissions=["change"], description="Cancel selected unfinished jobs")
    def cancel_selected(self, request, queryset):
        self._act_many(request, queryset, "cancel")

    @admin.action(permissions=["change"], description="Retry selected failed jobs")
    def retry_selected(self, request, queryset):
        self._act_many(request, queryset, "retry")


def _is_uuid(value) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyAdmin):
    """Read-only: the event log of every job."""

    tenant_field, tenant_owner_field = "job__merchant_id", "job__owner"

    list_display = ["id", "job", "kind", "data_shown", "created_at"]
    list_filter = ["kind"]
    list_select_related = ["job"]
    search_fields = ["=job__job_id"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    ordering = ["-id"]

    @admin.display(description="data")
    def data_shown(self, event):
        return json.dumps(event.data, sort_keys=True, ensure_ascii=False, default=str)
