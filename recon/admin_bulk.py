"""The review queue's "Reprocess all N matching" / "Ignore all N matching" (a filtered staging-entry list with the
review-queue filter), run as a `recon.review_bulk` job after a confirmation page. A mixin of StagingEntryAdmin."""

from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.dateparse import parse_datetime

from recon import services
from tracker import access


class ReviewBulkMixin:
    change_list_template = "admin/recon/stagingentry/change_list.html"

    def get_urls(self):
        return [path("bulk/", self.admin_site.admin_view(self.review_bulk_view),
                     name="recon_stagingentry_bulk")] + super().get_urls()

    @staticmethod
    def _review_scope(params) -> dict | None:
        """The list's filters as a review-queue scope; None unless the review-queue filter is on and nothing else
        the scope cannot express is."""
        which = params.get("queue")
        if which not in ("review", "stuck"):
            return None
        scope = {"which": which, "created_after": None, "created_before": None}
        for param, value in params.items():
            if param in ("queue", "o", "p", "action", "csrfmiddlewaretoken", "reason") or not value:
                continue
            key = {"created_at__gte": "created_after", "created_at__lt": "created_before"}.get(param)
            if key is None or (parse_datetime(value) is None and value[:10].count("-") != 2):
                return None
            scope[key] = value
        return scope

    def _scope_qs(self, request, scope):
        when = {k: parse_datetime(v) or parse_datetime(f"{v[:10]}T00:00:00+00:00") if v else None
                for k, v in scope.items() if k != "which"}
        return services.review_queue_matching(which=scope["which"], merchant_ids=access.operable_tenants(request.user),
                                              **when)

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        scope = self._review_scope(request.GET)
        if scope is not None and self.has_change_permission(request):
            n = self._scope_qs(request, scope).count()
            base = reverse("admin:recon_stagingentry_bulk")
            extra_context["review_bulk_links"] = [
                {"action": a, "n": n, "url": f"{base}?{urlencode({**request.GET.dict(), 'action': a})}"}
                for a in services.REVIEW_BULK_ACTIONS]
        return super().changelist_view(request, extra_context=extra_context)

    def review_bulk_view(self, request):
        from jobs import services as job_services

        if not self.has_change_permission(request):
            if request.method == "POST":
                raise PermissionDenied
            self.message_user(request, "Only operators may reprocess or ignore entries.", messages.ERROR)
            return redirect("admin:recon_stagingentry_changelist")
        params = request.POST if request.method == "POST" else request.GET
        action, scope = params.get("action"), self._review_scope(params)
        if action not in services.REVIEW_BULK_ACTIONS or scope is None:
            self.message_user(request, "Choose the review queue filter first.", messages.ERROR)
            return redirect("admin:recon_stagingentry_changelist")
        operable = access.operable_tenants(request.user)
        if operable is not None and not operable:
            raise PermissionDenied
        if request.method == "POST":
            reason = params.get("reason", "").strip()
            if action == "ignore" and not reason:
                self.message_user(request, "Ignoring needs a reason.", messages.ERROR)
                return redirect(f"{reverse('admin:recon_stagingentry_bulk')}?{urlencode(params.dict())}")
            job = job_services.job_create(job_type="recon.review_bulk", owner=request.user,
                                          params={"action": action, **scope, "reason": reason})
            self.message_user(request, f"Bulk {action} started as job {job.pk}.")
            return redirect("admin:jobs_job_change", job.pk)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": f"Bulk {action}",
                   "action": action, "n": self._scope_qs(request, scope).count(),
                   "params": [(k, v) for k, v in params.items() if k != "csrfmiddlewaretoken"],
                   "back": reverse("admin:recon_stagingentry_changelist") + "?" + urlencode(
                       {k: v for k, v in params.items() if k != "action"})}
        return TemplateResponse(request, "admin/recon/stagingentry/bulk_confirm.html", context)
