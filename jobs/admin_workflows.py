"""The workflows console: a run's graph and steps on its job page (live, with "Retry from this step" on a FAILED
run), the declared workflows with their graphs, and the analytics page (the selector of GET /api/workflows/stats/).
Every view is scoped like the jobs API (jobs.api.visible_jobs) and acts through the services."""

import datetime as dt
import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.safestring import mark_safe

from config.errors import AppError
from jobs.api import can_change, visible_jobs
from jobs.models import STEP_DONE_STATES, Job, JobState, WorkflowStep
from jobs.workflows import declare, engine, graph
from jobs.workflows.selectors import workflow_stats
from tracker.pagination import CappedCountPaginator

WINDOWS = [(1, "last hour"), (6, "last 6 hours"), (24, "last 24 hours"), (24 * 7, "last 7 days"),
           (24 * 30, "last 30 days")]


def _run_fragment_context(request, job: Job) -> dict:
    steps = list(WorkflowStep.objects.filter(job_id=job.pk).order_by("position"))
    by_name = {s.name: s for s in steps}
    failed_run = job.state == JobState.FAILED and can_change(request.user, job)
    for s in steps:
        s.colour = graph.STEP_COLOURS.get(s.state, "#000")
        s.result_json = json.dumps(s.result, indent=2, sort_keys=True, default=str)
        s.retryable = failed_run and all(by_name[p].state in STEP_DONE_STATES for p in s.depends_on)
        s.retry_url = reverse("admin:jobs_workflowstep_retry", args=[s.pk])
    return {"job": job, "steps": steps, "graph": mark_safe(graph.run_svg(steps)),  # built from escaped text
            "can_retry_steps": failed_run}


def run_panel(request, job: Job) -> str:
    """The panel the job change page shows for a workflow run ("" for other jobs)."""
    if job.workflow_version is None:
        return ""
    context = {**_run_fragment_context(request, job),
               "fragment_url": reverse("admin:jobs_workflowstep_fragment",
                                       args=[WorkflowStep.objects.filter(job_id=job.pk).values_list("pk", flat=True)
                                             .first()]),
               "events_url": f"/api/jobs/{job.pk}/events/"}
    return mark_safe(render_to_string("admin/jobs/workflows/run_panel.html", context, request=request))


def _run_of_step(request, step_id) -> Job:
    job = visible_jobs(request.user).filter(workflow_steps__pk=step_id).first()
    if job is None:
        raise Http404("Workflow step not found.")
    return job


@admin.register(WorkflowStep)
class WorkflowStepAdmin(admin.ModelAdmin):
    """Read-only list of workflow steps (every run's), with links to the declared workflows and the analytics; its
    custom views (scoped and guarded by config.console: GET needs view, POST change) draw runs, retry a step and
    start runs. Steps change only through the engine: no add, delete or editable field."""

    tenant_field, tenant_owner_field = "job__merchant_id", "job__owner"
    tenant_permissions = ("view", "change")

    list_display = ["name", "run_link", "state", "attempts", "attempts_limit", "duration_ms", "started_at",
                    "finished_at"]
    list_filter = ["state", ("finished_at", admin.DateFieldListFilter)]
    search_fields = ["=job__job_id", "=name"]
    list_select_related = ["job"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    ordering = ["-id"]
    change_list_template = "admin/jobs/workflows/step_changelist.html"

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    @admin.display(description="run")
    def run_link(self, step):
        from django.utils.html import format_html

        return format_html('<a href="{}">{} {}</a>', reverse("admin:jobs_job_change", args=[step.job_id]),
                           step.job.job_type, str(step.job_id)[:8])

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "declared_url": reverse("admin:jobs_workflows_declared"),
                         "analytics_url": reverse("admin:jobs_workflows_analytics")}
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("declared/", view(self.declared_view), name="jobs_workflows_declared"),
            path("analytics/", view(self.analytics_view), name="jobs_workflows_analytics"),
            path("start/<str:name>/", view(self.start_view), name="jobs_workflow_start"),
            # Keyed by a step (object_id), so config.console's guard scopes them: the run of that step.
            path("<int:object_id>/fragment/", view(self.fragment_view), name="jobs_workflowstep_fragment"),
            path("<int:object_id>/retry/", view(self.step_retry_view), name="jobs_workflowstep_retry"),
            *super().get_urls(),
        ]

    def _base(self, request) -> dict:
        return {**self.admin_site.each_context(request), "opts": self.model._meta,
                "declared_url": reverse("admin:jobs_workflows_declared"),
                "analytics_url": reverse("admin:jobs_workflows_analytics"),
                "runs_url": reverse("admin:jobs_job_changelist"),
                "steps_url": reverse("admin:jobs_workflowstep_changelist")}

    def declared_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        workflows = [{"name": w.name, "version": w.version, "description": w.description,
                      "older": [v for v in declare.versions(w.name) if v != w.version],
                      "graph": mark_safe(graph.workflow_svg(w)), "text": w.as_text(),  # escaped SVG text
                      "start_url": reverse("admin:jobs_workflow_start", args=[w.name]) if w.start_form else ""}
                     for w in declare.all_workflows()]
        return TemplateResponse(request, "admin/jobs/workflows/declared.html",
                                {**self._base(request), "title": "Workflows", "workflows": workflows})

    def analytics_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            hours = int(request.GET.get("hours", 24))
        except ValueError:
            hours = 24
        hours = hours if hours in dict(WINDOWS) else 24
        names = [w.name for w in declare.all_workflows()]
        workflow = request.GET.get("workflow") or None
        workflow = workflow if workflow in names else None
        stats = workflow_stats(jobs=visible_jobs(request.user), since=timezone.now() - dt.timedelta(hours=hours),
                               workflow=workflow)
        return TemplateResponse(request, "admin/jobs/workflows/analytics.html",
                                {**self._base(request), "title": "Workflow analytics", "stats": stats,
                                 "windows": WINDOWS, "hours": hours, "names": names, "workflow": workflow or ""})

    def start_view(self, request, name):
        """The workflow's start form (`start_form` of its declaration): files, dates, ...; starts a run."""
        wf = next((w for w in declare.all_workflows() if w.name == name and w.start_form), None)
        if wf is None:
            raise Http404("No such workflow, or it cannot be started from the console.")
        if request.method == "POST":
            form = wf.start_form(request.POST, request.FILES, user=request.user)
            if form.is_valid():
                try:
                    job = form.start(by=request.user)
                except AppError as exc:
                    form.add_error(None, exc.message)
                else:
                    self.message_user(request, f"{wf.name} started.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))
        else:
            form = wf.start_form(user=request.user)
        return TemplateResponse(request, "admin/jobs/workflows/start.html",
                                {**self._base(request), "title": f"Start {wf.name}", "form": form, "workflow": wf})

    def fragment_view(self, request, object_id):
        """The run's graph and steps (the panel's live refresh), for the run of step `object_id`."""
        job = _run_of_step(request, object_id)
        return HttpResponse(render_to_string("admin/jobs/workflows/run_fragment.html",
                                             _run_fragment_context(request, job), request=request))

    def step_retry_view(self, request, object_id):
        """POST: "Retry from this step" (jobs.workflows.engine.workflow_step_retry)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        step = WorkflowStep.objects.filter(pk=object_id).first()
        job = _run_of_step(request, object_id)
        name = step.name
        if not can_change(request.user, job):
            raise PermissionDenied
        try:
            engine.workflow_step_retry(job_id=job.pk, name=name, by=request.user)
            self.message_user(request, f"Running step {name!r} and everything after it again.", messages.SUCCESS)
        except AppError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))
