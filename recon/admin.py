"""Admin console for recon: configuration, the read-only ledger, the review queue (FSM buttons and actions
that call services) and the summary page."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import OuterRef, Subquery
from django.shortcuts import redirect, render
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from config.errors import AppError
from recon import access, reports, services, uploads
from recon.selectors import staging_entries_in_review, staging_entries_stuck
from recon.models import (Account, ClosedPeriod, Entry, EntryStatus, Merchant, MerchantMembership, ReconRule,
                          StagingEntry, StagingStatus, Transaction, TransactionStatus, Upload)
from tracker.admin_base import AuditedFSMAdminMixin, ReadOnlyAdmin
from tracker.pagination import CappedCountPaginator
from tracker.models import ProcessTracker


class MembershipInline(admin.TabularInline):
    model = MerchantMembership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    tenant_field = "merchant_id"
    tenant_permissions = ("view",)  # staff create and rename merchants
    list_display = ["merchant_id", "merchant_name", "created_at"]
    search_fields = ["merchant_id", "merchant_name"]
    inlines = [MembershipInline]


@admin.register(MerchantMembership)
class MerchantMembershipAdmin(admin.ModelAdmin):
    staff_only = True
    list_display = ["user", "merchant", "role", "created_at"]
    list_filter = ["role"]
    list_select_related = ["user", "merchant"]
    search_fields = ["user__username", "merchant__merchant_id"]
    autocomplete_fields = ["user", "merchant"]


class CsvImportForm(forms.Form):
    file = forms.FileField(help_text="A .csv file: order_id, amount, currency, transaction_date, type.")
    processing_mode = forms.ChoiceField(choices=[("TRANSACTION", "TRANSACTION"), ("CONFIRMATION", "CONFIRMATION")])
    force = forms.BooleanField(required=False, help_text="Import even if this file was uploaded to the account "
                                                          "before.")


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    tenant_field = "merchant_id"
    change_form_template = "admin/recon/account/change_form.html"
    list_display = ["account_name", "merchant", "account_type", "currency", "initial_balance", "created_at"]
    list_filter = ["account_type", "currency"]
    list_select_related = ["merchant"]
    search_fields = ["account_name", "account_id", "merchant__merchant_id"]
    readonly_fields = ["account_id", "balances"]

    @admin.display(description="balances")
    def balances(self, obj):
        from recon.balances import balances_of

        return ", ".join(f"{k}: {v}" for k, v in balances_of(obj).items()) if obj.pk else "-"

    def get_urls(self):
        return [path("<uuid:object_id>/import-csv/", self.admin_site.admin_view(self.import_csv_view),
                     name="recon_account_import_csv"), *super().get_urls()]

    def import_csv_view(self, request, object_id):
        """Uploads a CSV file and starts the same `recon.import_csv` job as the API, then shows the job."""
        account = self.get_queryset(request).filter(pk=object_id).first()
        if account is None:
            self.message_user(request, "Account not found.", messages.ERROR)
            return redirect("admin:recon_account_changelist")
        if not access.can_operate(request.user, account.merchant_id):
            self.message_user(request, "Only operators of this merchant may import files.", messages.ERROR)
            return redirect("admin:recon_account_change", account.pk)
        form = CsvImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            file = form.cleaned_data["file"]
            try:
                job = uploads.csv_import_start(account=account, file=file, name=file.name,
                                               processing_mode=form.cleaned_data["processing_mode"],
                                               force=form.cleaned_data["force"], by=request.user)
            except AppError as exc:
                form.add_error("file" if exc.status != 409 else "force", exc.message)
            else:
                self.message_user(request, f"Import of {file.name} started.", messages.SUCCESS)
                return redirect("admin:jobs_job_change", job.pk)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "original": account,
                   "form": form, "title": "Import CSV"}
        return render(request, "admin/recon/account/import_csv.html", context)


@admin.register(ReconRule)
class ReconRuleAdmin(admin.ModelAdmin):
    tenant_field = "merchant_id"
    list_display = ["id", "merchant", "account_one", "account_two", "match_key", "amount_tolerance",
                    "amount_tolerance_pct", "date_window_days", "difference_account"]
    list_select_related = ["merchant", "account_one", "account_two", "difference_account"]
    autocomplete_fields = ["account_one", "account_two", "difference_account"]


class EntryInline(admin.TabularInline):
    model = Entry
    extra = 0
    can_delete = False
    fields = ["entry_id", "account", "entry_type", "amount", "currency", "status", "effective_date"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Transaction)
class TransactionAdmin(ReadOnlyAdmin):
    tenant_field = "merchant_id"
    list_display = ["logical_transaction_id", "version", "status", "amount", "currency", "merchant", "created_at"]
    list_filter = ["status", ("created_at", admin.DateFieldListFilter)]
    list_select_related = ["merchant"]
    search_fields = ["logical_transaction_id", "transaction_id"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    inlines = [EntryInline]


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    tenant_field = "account__merchant_id"
    list_display = ["entry_id", "account", "entry_type", "amount", "currency", "status", "effective_date",
                    "transaction"]
    list_filter = ["status", "entry_type"]
    list_select_related = ["account", "transaction"]
    paginator = CappedCountPaginator
    search_fields = ["entry_id", "transaction__logical_transaction_id"]
    show_full_result_count = False


class ReviewQueueFilter(admin.SimpleListFilter):
    title = "review queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [("review", "Needs review (incl. failed/cancelled tasks)"), ("stuck", "PENDING, task failed/cancelled")]

    def queryset(self, request, queryset):
        if self.value() == "review":
            return staging_entries_in_review(queryset)
        if self.value() == "stuck":
            return staging_entries_stuck(queryset)
        return queryset


class IgnoreForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), help_text="Why is this entry ignored?")


class MatchForm(forms.Form):
    entry_id = forms.ChoiceField(label="Expected entry", widget=forms.RadioSelect)
    reason = forms.CharField(required=False)


@admin.register(StagingEntry)
class StagingEntryAdmin(AuditedFSMAdminMixin, admin.ModelAdmin):
    tenant_field = "account__merchant_id"
    fsm_fields = ["status"]
    fsm_forms = {"ignore": IgnoreForm}
    list_display = ["staging_entry_id", "account", "processing_mode", "entry_type", "amount", "currency",
                    "effective_date", "status", "task_status", "reason", "created_at"]
    list_filter = [ReviewQueueFilter, "status", "processing_mode", ("created_at", admin.DateFieldListFilter)]
    list_select_related = ["account"]
    search_fields = ["staging_entry_id", "idempotency_key"]
    live_refresh = True  # the list refreshes itself (templates/admin/change_list.html)
    show_full_result_count = False
    paginator = CappedCountPaginator
    readonly_fields = ["staging_entry_id", "account", "entry_type", "amount", "currency", "effective_date",
                       "processing_mode", "metadata", "idempotency_key", "task_id", "mismatch_transaction",
                       "created_at", "updated_at", "discarded_at", "group_link"]
    exclude = ["request_hash"]
    actions = ["reprocess_selected", "ignore_selected", "match_selected"]

    def has_add_permission(self, request):
        return False  # created through the API, imports and commands (with their task)

    def get_queryset(self, request):
        task_status = ProcessTracker.objects.filter(pk=OuterRef("task_id")).values("status")[:1]
        return super().get_queryset(request).annotate(task_status=Subquery(task_status))

    @admin.display(description="group")
    def group_link(self, obj):
        group = (obj.metadata or {}).get("group")
        if not group:
            return "-"
        return format_html('<a href="{}">{} members, sum {}, confirmation {}, difference {}</a>',
                           reverse("admin:recon_stagingentry_group", args=[obj.pk]), group["members"],
                           group["sum"], group["confirmation_amount"], group["difference"])

    @admin.display(description="task")
    def task_status(self, obj):
        return getattr(obj, "task_status", None) or "-"

    @admin.display(description="reason")
    def reason(self, obj):
        meta = obj.metadata or {}
        return f"{meta['error_type']}: {meta.get('error', '')}" if meta.get("error_type") else \
            meta.get("match_type", "")

    # FSM buttons route through the services so tasks and mismatches follow.
    def _apply_fsm_transition(self, *, obj, transition_name, request, kwargs=None):
        action = {"reprocess": "reprocess", "ignore": "ignore"}.get(transition_name)
        if action is None:
            return super()._apply_fsm_transition(obj=obj, transition_name=transition_name, request=request,
                                                 kwargs=kwargs)
        try:
            services.staging_entry_resolve(staging_entry_id=obj.pk, action=action, by=request.user,
                                           reason=(kwargs or {}).get("reason", ""))
        except (AppError, ValidationError) as exc:
            self.message_user(request, f"{action} failed: {getattr(exc, 'message', exc)}", messages.ERROR)
            return False
        self.message_user(request, f"Staging entry {action} done.", messages.SUCCESS)
        return True

    # Actions: filter to legal states, call the service per entry, report done and skipped.
    def _resolve_many(self, request, queryset, action: str, reason: str = "") -> None:
        total = queryset.count()
        candidates = staging_entries_in_review(queryset)
        done, failures = 0, []
        for pk, merchant_id in candidates.values_list("pk", "account__merchant_id"):
            if not access.can_operate(request.user, merchant_id):
                failures.append(f"{pk}: not an operator")
                continue
            try:
                services.staging_entry_resolve(staging_entry_id=pk, action=action, by=request.user, reason=reason)
                done += 1
            except (AppError, ValidationError) as exc:
                failures.append(f"{pk}: {getattr(exc, 'message', exc)}")
        self.message_user(request, f"{action}: {done} done, {total - done} skipped"
                          + (f" ({'; '.join(failures[:5])})" if failures else ""),
                          messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="Reprocess selected (review queue only)")
    def reprocess_selected(self, request, queryset):
        self._resolve_many(request, queryset, "reprocess")

    @admin.action(description="Ignore selected (archive; review queue only)")
    def ignore_selected(self, request, queryset):
        self._resolve_many(request, queryset, "ignore", reason=f"ignored in the admin by {request.user}")

    @admin.action(description="Match selected entry to an expected entry…")
    def match_selected(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one staging entry to match.", messages.WARNING)
            return None
        return redirect(reverse("admin:recon_stagingentry_match", args=[queryset.get().pk]))

    def get_urls(self):
        return [
            path("summary/", self.admin_site.admin_view(self.summary_view), name="recon_summary"),
            path("<uuid:object_id>/match/", self.admin_site.admin_view(self.match_view),
                 name="recon_stagingentry_match"),
            path("<uuid:object_id>/group/", self.admin_site.admin_view(self.group_view),
                 name="recon_stagingentry_group"),
            *super().get_urls(),
        ]

    def match_view(self, request, object_id):
        entry = self.get_queryset(request).filter(pk=object_id).select_related("account").first()
        if entry is None or entry.status != StagingStatus.NEEDS_MANUAL_REVIEW:
            self.message_user(request, "Only entries in review can be matched.", messages.ERROR)
            return redirect("admin:recon_stagingentry_changelist")
        candidates = list(Entry.objects.filter(
            account=entry.account, status=EntryStatus.EXPECTED,
            transaction__status__in=(TransactionStatus.EXPECTED, TransactionStatus.MISMATCH),
        ).select_related("transaction").order_by("-effective_date")[:200])
        form = MatchForm(request.POST or None)
        form.fields["entry_id"].choices = [
            (str(c.pk), f"{c.transaction.logical_transaction_id} v{c.transaction.version} "
                        f"{c.entry_type} {c.amount} {c.currency} {c.effective_date:%Y-%m-%d} "
                        f"[{c.transaction.status}] {c.metadata.get('order_id', '')}") for c in candidates]
        if request.method == "POST" and form.is_valid():
            try:
                services.staging_entry_resolve(staging_entry_id=entry.pk, action="match", by=request.user,
                                               entry_id=form.cleaned_data["entry_id"],
                                               reason=form.cleaned_data["reason"])
                self.message_user(request, "Matched.", messages.SUCCESS)
                return redirect("admin:recon_stagingentry_change", entry.pk)
            except (AppError, ValidationError) as exc:
                self.message_user(request, f"Match failed: {getattr(exc, 'message', exc)}", messages.ERROR)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "original": entry,
                   "form": form, "title": "Match to an expected entry"}
        return render(request, "admin/recon/stagingentry/match.html", context)

    def group_view(self, request, object_id):
        """A payout's grouped mismatch (recon.grouped): the members, their sum, the confirmation amount and the
        difference; accept with a write-off, or split (settle the chosen members, leave the rest open)."""
        from recon.grouped import GroupResolveForm, group_members

        entry = self.get_queryset(request).filter(pk=object_id).select_related("account").first()
        group = (entry.metadata or {}).get("group") if entry is not None else None
        if not group:
            self.message_user(request, "This staging entry has no group.", messages.ERROR)
            return redirect("admin:recon_stagingentry_changelist")
        members = group_members(group)
        form = GroupResolveForm(request.POST or None, members=members)
        can_resolve = entry.status == StagingStatus.NEEDS_MANUAL_REVIEW and access.can_operate(
            request.user, entry.account.merchant_id)
        if request.method == "POST" and can_resolve and form.is_valid():
            try:
                services.staging_entry_resolve_group(
                    staging_entry_id=entry.pk, by=request.user, reason=form.cleaned_data["reason"],
                    transaction_ids=form.cleaned_data["members"], write_off=form.cleaned_data["write_off"])
                self.message_user(request, "Group resolved.", messages.SUCCESS)
                return redirect("admin:recon_stagingentry_change", entry.pk)
            except (AppError, ValidationError, PermissionDenied) as exc:
                self.message_user(request, f"Resolve failed: {getattr(exc, 'message', exc)}", messages.ERROR)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "original": entry,
                   "group": group, "members": members, "form": form, "can_resolve": can_resolve,
                   "title": "Grouped match"}
        return render(request, "admin/recon/stagingentry/group.html", context)

    def summary_view(self, request):
        tenants = access.visible_tenants(request.user)
        data = reports.summary(request.GET.get("merchant_id") or None, merchant_ids=tenants)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "summary": data,
                   "title": "Reconciliation summary"}
        return TemplateResponse(request, "admin/recon/summary.html", context)


@admin.register(ClosedPeriod)
class ClosedPeriodAdmin(admin.ModelAdmin):
    tenant_field = "merchant_id"
    tenant_permissions = ("view",)  # staff reopen periods; operators close them through the close-period job
    list_display = ["merchant", "start_date", "end_date", "closed_by", "closed_at", "reopened_at"]
    list_select_related = ["merchant", "closed_by"]
    readonly_fields = ["closed_by", "closed_at", "reopened_by", "reopened_at"]
    actions = ["reopen_selected"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.closed_by = request.user
        super().save_model(request, obj, form, change)

    @admin.action(description="Reopen selected periods")
    def reopen_selected(self, request, queryset):
        total = queryset.count()
        done = 0
        for period in queryset.filter(reopened_at__isnull=True):
            services.period_reopen(period=period, by=request.user)
            done += 1
        self.message_user(request, f"reopened {done}, skipped {total - done} (already reopened)")


@admin.register(Upload)
class UploadAdmin(ReadOnlyAdmin):
    """Uploaded CSV files (their bytes stay in the database; start imports from the account's page)."""

    list_display = ["name", "account", "size", "line_count", "sha256", "created_by", "created_at"]
    list_select_related = ["account", "created_by"]
    search_fields = ["=upload_id", "name", "=sha256"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    tenant_field = "account__merchant_id"
