"""Admin console for recon: configuration (saved through the same services as the API), the read-only ledger,
the review queue (columns, filters, search by any metadata value, match with write-off, bulk resolve, the audit
trail) and the summary page. Money and dates read through `recon.formatting`."""

import csv
import datetime as dt
import io
import json
import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from config.errors import AppError
from recon import access, balances, formatting, reports, services, uploads
from recon.admin_bulk import ReviewBulkMixin
from recon.ingest import mapping_problems
from recon.models import (
    Account,
    BankStatement,
    ClosedPeriod,
    Entry,
    EntryStatus,
    Merchant,
    MerchantMembership,
    MetadataValues,
    ReconRule,
    StagingEntry,
    StagingStatus,
    Transaction,
    TransactionStatus,
    Upload,
)
from recon.selectors import review_queue_q, stuck_q
from tracker import audit
from tracker.admin_base import AuditedFSMAdminMixin, ReadOnlyAdmin
from tracker.models import ProcessTracker
from tracker.pagination import CappedCountPaginator


def _admin_link(obj, text=None) -> str:
    """A link to the object's console page (its text when the model has none)."""
    if obj is None:
        return "-"
    try:
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return str(text or obj)
    return format_html('<a href="{}">{}</a>', url, text or obj)


def audit_table(obj) -> str:
    """The object's audit rows (tracker.audit) as a table: when, from, to, by, reason."""
    rows = audit.history(obj)
    if not rows:
        return "-"
    body = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        ((formatting.when(t.at), t.from_status or "-", t.to_status, t.by, t.reason) for t in rows),
    )
    return format_html(
        '<table class="recon-audit"><thead><tr><th>When</th><th>From</th><th>To</th><th>By</th>'
        "<th>Reason</th></tr></thead><tbody>{}</tbody></table>",
        body,
    )


class ReadOnlyPageMixin:
    """Change pages without a Save button when nothing on them can be edited (the buttons that act, such as
    FSM transitions, stay)."""

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        obj = self.get_object(request, object_id)
        fields = [f for _, options in self.get_fieldsets(request, obj) for f in options["fields"]]
        editable = [f for f in fields if f not in self.get_readonly_fields(request, obj)]
        if not editable or not self.has_change_permission(request, obj):
            extra_context.update(
                {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False}
            )
        return super().change_view(request, object_id, form_url, extra_context)


class AuditHistoryMixin:
    """The History page shows the project's audit rows (tracker.audit: who, when, from, to, why), not Django's
    LogEntry (which services never write)."""

    def history_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": obj,
            "title": f"History: {obj}",
            "audit_trail": audit_table(obj),
            "object_id": object_id,
        }
        return TemplateResponse(request, "admin/recon/audit_history.html", context)


class ServiceForm(forms.ModelForm):
    """A configuration form that saves through a recon service: `clean()` calls `apply(cleaned_data)` (the
    service, inside a savepoint) and shows its ValidationError/AppError on the form; `save()` returns the
    object the service wrote. Model-level validation is the service's, so `_post_clean` does nothing."""

    service_fields: dict = {}  # service error key -> form field

    def apply(self, data: dict):
        raise NotImplementedError

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            with transaction.atomic():
                self.instance = self.apply(data)
        except ValidationError as exc:
            for key, messages_ in (
                exc.message_dict.items() if hasattr(exc, "error_dict") else [("__all__", exc.messages)]
            ):
                field = self.service_fields.get(key, key)
                self.add_error(field if field in self.fields else None, messages_)
        except AppError as exc:
            field = self.service_fields.get(exc.details.get("field", ""), "")
            self.add_error(field if field in self.fields else None, exc.message)
        return data

    def _post_clean(self):
        pass

    def save(self, commit=True):
        return self.instance

    def save_m2m(self):
        pass


class ServiceAdmin(ReadOnlyPageMixin, admin.ModelAdmin):
    """Saves with the form's service (no direct model save); deletes with `delete_with` (None: no delete)."""

    delete_with = None

    def save_model(self, request, obj, form, change):
        pass  # written by the form's service

    def has_delete_permission(self, request, obj=None):
        return self.delete_with is not None and super().has_delete_permission(request, obj)

    def delete_model(self, request, obj):
        type(self).delete_with(obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            type(self).delete_with(obj)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except AppError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return redirect(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", object_id)


# --- merchants and their users ------------------------------------------------------------------------


class MembershipInline(admin.TabularInline):
    """The merchant's users (read here; linked and changed on the memberships page, through the service)."""

    model = MerchantMembership
    extra = 0
    can_delete = False
    fields = readonly_fields = ["user", "role", "created_at"]
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class MerchantForm(ServiceForm):
    class Meta:
        model = Merchant
        fields = ["merchant_id", "merchant_name"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "merchant_id" in self.fields:
            self.fields["merchant_id"].required = False
            self.fields["merchant_id"].help_text = "Generated when empty."

    def apply(self, data):
        if self.instance.pk and not self.instance._state.adding:
            return services.merchant_rename(merchant=self.instance, merchant_name=data["merchant_name"])
        return services.merchant_create(merchant_name=data["merchant_name"], merchant_id=data.get("merchant_id"))


@admin.register(Merchant)
class MerchantAdmin(ServiceAdmin):
    tenant_field = "merchant_id"
    tenant_permissions = ("view",)  # staff create and rename merchants
    form = MerchantForm
    list_display = ["merchant_id", "merchant_name", "created_at"]
    search_fields = ["merchant_id", "merchant_name"]
    inlines = [MembershipInline]

    def get_readonly_fields(self, request, obj=None):
        return ["merchant_id", "created_at", "updated_at"] if obj else ["created_at", "updated_at"]


class MembershipForm(ServiceForm):
    class Meta:
        model = MerchantMembership
        fields = ["user", "merchant", "role"]

    def apply(self, data):
        user = data.get("user") or self.instance.user
        merchant = data.get("merchant") or self.instance.merchant
        return services.membership_set(user=user, merchant=merchant, role=data["role"])


@admin.register(MerchantMembership)
class MerchantMembershipAdmin(ServiceAdmin):
    staff_only = True
    form = MembershipForm
    delete_with = staticmethod(lambda m: services.membership_delete(membership=m))
    list_display = ["user", "merchant", "role", "created_at"]
    list_filter = ["role"]
    list_select_related = ["user", "merchant"]
    search_fields = ["user__username", "merchant__merchant_id"]
    autocomplete_fields = ["user", "merchant"]

    def get_readonly_fields(self, request, obj=None):
        return ["user", "merchant", "created_at"] if obj else ["created_at"]


# --- accounts -----------------------------------------------------------------------------------------


class CsvImportForm(forms.Form):
    file = forms.FileField(
        help_text="A CSV file (order_id, amount, currency, transaction_date, type) or a bank "
        "statement (camt.052/053/054, MT940/942, OFX, BAI2)."
    )
    processing_mode = forms.ChoiceField(choices=[("TRANSACTION", "TRANSACTION"), ("CONFIRMATION", "CONFIRMATION")])
    format = forms.ChoiceField(
        choices=[(f, f) for f in uploads.FORMAT_CHOICES],
        initial="auto",
        required=False,
        help_text="auto: recognised from the content.",
    )
    mapping = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text='CSV only, JSON: the file\'s columns for our fields, e.g. {"order_id": "Reference", "amount": "Net", '
        '"transaction_date": "Created (UTC)", "date_format": "%d.%m.%Y", "decimal_separator": ",", "delimiter": ";"}. '
        "Without a type column a negative amount is a Refund. Filled with the account's last mapping.",
    )
    force = forms.BooleanField(required=False, help_text="Import even if this file was uploaded to the account before.")

    def clean_mapping(self):
        text = (self.cleaned_data.get("mapping") or "").strip()
        if not text:
            return None
        try:
            mapping = json.loads(text)
        except ValueError:
            raise ValidationError("Not JSON text.") from None
        if problems := mapping_problems(mapping):
            raise ValidationError([f"{k}: {' '.join(v)}" for k, v in problems.items()])
        return mapping


class AccountForm(ServiceForm):
    currency = forms.CharField(max_length=3, help_text="ISO 4217 code (any case).")

    class Meta:
        model = Account
        fields = ["merchant", "account_name", "account_type", "currency", "initial_balance"]

    def apply(self, data):
        if self.instance.pk and not self.instance._state.adding:
            return services.account_update(
                account=self.instance,
                account_name=data.get("account_name"),
                **{f: data[f] for f in ("account_type", "currency", "initial_balance") if f in self.fields},
            )
        return services.account_create(
            merchant=data["merchant"],
            account_name=data["account_name"],
            account_type=data["account_type"],
            currency=data["currency"],
            initial_balance=data.get("initial_balance"),
        )


@admin.register(Account)
class AccountAdmin(ServiceAdmin):
    tenant_field = "merchant_id"
    form = AccountForm
    delete_with = staticmethod(lambda a: services.account_delete(account=a))
    change_form_template = "admin/recon/account/change_form.html"
    list_display = ["account_name", "merchant", "account_type", "currency", "opening_balance", "created_at"]
    list_filter = ["account_type", "currency"]
    list_select_related = ["merchant"]
    search_fields = ["account_name", "account_id", "merchant__merchant_id"]

    def get_readonly_fields(self, request, obj=None):
        fields = ["account_id", "balances", "created_at", "updated_at"]
        if obj is not None:
            fields.insert(0, "merchant")
            if services.account_has_entries(obj):  # frozen: the service and a trigger refuse changes too
                fields[1:1] = ["account_type", "currency", "initial_balance"]
        return fields

    @admin.display(description="opening balance", ordering="initial_balance")
    def opening_balance(self, obj):
        return formatting.money(obj.initial_balance, obj.currency)

    @admin.display(description="balances")
    def balances(self, obj):
        from recon.balances import balances_of

        if not obj.pk:
            return "-"
        return ", ".join(
            f"{k.replace('_balance', '')}: {formatting.money(v, obj.currency)}" for k, v in balances_of(obj).items()
        )

    def get_urls(self):
        return [
            path(
                "<uuid:object_id>/import-csv/",
                self.admin_site.admin_view(self.import_csv_view),
                name="recon_account_import_csv",
            ),
            *super().get_urls(),
        ]

    def import_csv_view(self, request, object_id):
        """Uploads a file and starts the same `recon.import_file` job as the API, then shows the job."""
        account = self.get_queryset(request).filter(pk=object_id).first()
        if account is None:
            self.message_user(request, "Account not found.", messages.ERROR)
            return redirect("admin:recon_account_changelist")
        if not access.can_operate(request.user, account.merchant_id):
            self.message_user(request, "Only operators of this merchant may import files.", messages.ERROR)
            return redirect("admin:recon_account_change", account.pk)
        last = uploads.last_mapping(account)
        form = CsvImportForm(
            request.POST or None, request.FILES or None, initial={"mapping": json.dumps(last) if last else ""}
        )
        if request.method == "POST" and form.is_valid():
            file = form.cleaned_data["file"]
            try:
                job = uploads.file_import_start(
                    account=account,
                    file=file,
                    name=file.name,
                    processing_mode=form.cleaned_data["processing_mode"],
                    file_format_name=form.cleaned_data["format"] or "auto",
                    mapping=form.cleaned_data["mapping"],
                    force=form.cleaned_data["force"],
                    by=request.user,
                )
            except AppError as exc:
                form.add_error("file" if exc.status != 409 else "force", exc.message)
            else:
                self.message_user(request, f"Import of {file.name} started.", messages.SUCCESS)
                return redirect("admin:jobs_job_change", job.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": account,
            "form": form,
            "title": "Import a file",
        }
        return render(request, "admin/recon/account/import_csv.html", context)


# --- recon rules --------------------------------------------------------------------------------------


class ReconRuleForm(ServiceForm):
    service_fields = {
        "account_one_id": "account_one",
        "account_two_id": "account_two",
        "difference_account_id": "difference_account",
        "non_field_errors": "__all__",
    }

    class Meta:
        model = ReconRule
        fields = [
            "merchant",
            "account_one",
            "account_two",
            "match_key",
            "amount_tolerance",
            "amount_tolerance_pct",
            "date_window_days",
            "difference_account",
        ]

    def apply(self, data):
        diff = data.get("difference_account")
        return services.recon_rule_create(
            merchant=data["merchant"],
            account_one_id=data["account_one"].pk,
            account_two_id=data["account_two"].pk,
            match_key=data.get("match_key") or None,
            amount_tolerance=data.get("amount_tolerance"),
            amount_tolerance_pct=data.get("amount_tolerance_pct"),
            date_window_days=data.get("date_window_days"),
            difference_account_id=diff.pk if diff else None,
        )


@admin.register(ReconRule)
class ReconRuleAdmin(ServiceAdmin):
    """Rules are created through `recon_rule_create` (the API's validation: same merchant, same currency, a
    difference account with a tolerance) and deleted through `recon_rule_delete`; a rule is not edited in
    place (delete it and create another)."""

    tenant_field = "merchant_id"
    form = ReconRuleForm
    delete_with = staticmethod(lambda r: services.recon_rule_delete(rule=r))
    list_display = [
        "__str__",
        "merchant",
        "account_one",
        "account_two",
        "match_key",
        "tolerance",
        "date_window_days",
        "difference_account",
    ]
    list_select_related = ["merchant", "account_one", "account_two", "difference_account"]
    autocomplete_fields = ["account_one", "account_two", "difference_account"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["created_at"]
        return [*ReconRuleForm.Meta.fields, "created_at"]

    @admin.display(description="tolerance")
    def tolerance(self, obj):
        parts = []
        if obj.amount_tolerance:
            parts.append(formatting.money(obj.amount_tolerance, obj.account_one.currency))
        if obj.amount_tolerance_pct:
            parts.append(f"{obj.amount_tolerance_pct.normalize():f}%")
        return " or ".join(parts) or "none"


# --- the ledger (read-only) ---------------------------------------------------------------------------


class EntryInline(admin.TabularInline):
    model = Entry
    extra = 0
    can_delete = False
    fields = readonly_fields = ["entry_id", "account", "entry_type", "amount_shown", "status", "effective_date"]

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="amount")
    def amount_shown(self, obj):
        return formatting.money(obj.amount, obj.currency)


@admin.register(Transaction)
class TransactionAdmin(AuditHistoryMixin, ReadOnlyAdmin):
    tenant_field = "merchant_id"
    list_display = ["logical_transaction_id", "version", "status", "amount_shown", "merchant", "created_at"]
    list_filter = ["status", ("created_at", admin.DateFieldListFilter)]
    list_select_related = ["merchant"]
    search_fields = ["logical_transaction_id", "transaction_id"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    inlines = [EntryInline]
    readonly_fields = ["versions", "audit_trail"]

    @admin.display(description="amount", ordering="amount")
    def amount_shown(self, obj):
        return formatting.money(obj.amount, obj.currency)

    @admin.display(description="all versions")
    def versions(self, obj):
        rows = Transaction.objects.filter(logical_transaction_id=obj.logical_transaction_id).order_by("version")
        return format_html_join(", ", "{}", ((_admin_link(t, f"v{t.version} {t.status}"),) for t in rows))

    @admin.display(description="audit trail")
    def audit_trail(self, obj):
        return audit_table(obj)


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    tenant_field = "account__merchant_id"
    list_display = ["entry_id", "account", "entry_type", "amount_shown", "status", "effective_date", "transaction"]
    list_filter = ["status", "entry_type"]
    list_select_related = ["account", "transaction"]
    paginator = CappedCountPaginator
    search_fields = ["entry_id", "transaction__logical_transaction_id"]
    show_full_result_count = False

    @admin.display(description="amount", ordering="amount")
    def amount_shown(self, obj):
        return formatting.money(obj.amount, obj.currency)


# --- the review queue ---------------------------------------------------------------------------------

# Served by the partial indexes recon_staging_review (NEEDS_MANUAL_REVIEW) and recon_staging_pending_task (PENDING,
# by task id): a BitmapOr, whatever the table's size.
STUCK = stuck_q()
IN_REVIEW = review_queue_q()


class ReviewQueueFilter(admin.SimpleListFilter):
    title = "review queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [("review", "Needs review (incl. failed/cancelled tasks)"), ("stuck", "PENDING, task failed/cancelled")]

    def queryset(self, request, queryset):
        if self.value() == "review":
            return queryset.filter(IN_REVIEW)
        if self.value() == "stuck":
            return queryset.filter(STUCK)
        return queryset


class AccountFilter(admin.SimpleListFilter):
    title = "account"
    parameter_name = "account"

    def lookups(self, request, model_admin):
        tenants = access.visible_tenants(request.user)
        accounts = Account.objects.order_by("merchant_id", "account_name")
        accounts = accounts if tenants is None else accounts.filter(merchant_id__in=tenants)
        return [(str(a.pk), f"{a.account_name} ({a.currency}, {a.merchant_id})") for a in accounts[:200]]

    def queryset(self, request, queryset):
        if self.value():
            try:
                return queryset.filter(account_id=uuid.UUID(self.value()))
            except ValueError:
                return queryset.none()
        return queryset


REASONS = [
    "NoMatchFoundError",
    "MismatchError",
    "AmbiguousMatchError",
    "CurrencyMismatchError",
    "DuplicateTransactionError",
    "NoReconRuleFoundError",
    "UnbalancedTransactionError",
    "PeriodClosedError",
]


class ReasonFilter(admin.SimpleListFilter):
    title = "reason"
    parameter_name = "reason"

    def lookups(self, request, model_admin):
        return [(r, r.removesuffix("Error")) for r in REASONS] + [("task", "Task failed or cancelled")]

    def queryset(self, request, queryset):
        if self.value() == "task":
            return queryset.filter(STUCK)
        if self.value():
            return queryset.filter(metadata__error_type=self.value())
        return queryset


AGES = [
    ("1d", "Less than a day", 0, 1),
    ("3d", "1-3 days", 1, 3),
    ("7d", "3-7 days", 3, 7),
    ("30d", "7-30 days", 7, 30),
    ("old", "More than 30 days", 30, None),
]


class AgeFilter(admin.SimpleListFilter):
    """By age (since the entry was created), in the summary's buckets."""

    title = "age"
    parameter_name = "age"

    def lookups(self, request, model_admin):
        return [(key, label) for key, label, _, _ in AGES]

    def queryset(self, request, queryset):
        for key, _, low, high in AGES:
            if self.value() == key:
                now = timezone.now()
                queryset = queryset.filter(created_at__lte=now - dt.timedelta(days=low))
                return queryset if high is None else queryset.filter(created_at__gt=now - dt.timedelta(days=high))
        return queryset


def metadata_search(queryset, term: str, *, within: str | None = None):
    """Staging entries whose id is `term` or whose metadata has `term` as a value (any key; numbers match as
    numbers too: `1001` finds `{"invoice": 1001}`). One containment test on `MetadataValues(metadata)`, whose GIN
    index (recon_staging_meta_values) holds the entries in review: with `within="review"` (the review queue) the
    test is split into the entries in review (that index) and the stuck PENDING ones (recon_staging_pending_task),
    so it stays fast at millions of rows; elsewhere (`None`: any status) it reads the table."""
    try:
        number = float(term) if "." in term or "e" in term.lower() else int(term)
    except ValueError:
        number = None
    values = [term] + ([number] if number is not None and str(number) == term else [])
    try:
        by_id = Q(pk=uuid.UUID(term))
    except ValueError:
        by_id = Q(pk__in=[])

    def match(alias: str) -> Q:
        found = by_id
        for value in values:
            found |= Q(**{f"{alias}__contains": [value]})
        return found

    # Two spellings of the same values (`$.*`, `strict $.*`), so PostgreSQL does not factor the test out of the
    # OR below, which would hide the partial index's predicate from the planner.
    queryset = queryset.alias(meta_values=MetadataValues("metadata"), meta_strict=StrictMetadataValues("metadata"))
    if within == "review":
        return queryset.filter(
            (Q(status=StagingStatus.NEEDS_MANUAL_REVIEW) & match("meta_values")) | (STUCK & match("meta_strict"))
        )
    if within == "stuck":
        return queryset.filter(STUCK & match("meta_strict"))
    return queryset.filter(match("meta_values"))


class StrictMetadataValues(MetadataValues):
    """The same values as `MetadataValues`, spelled `strict $.*` (not indexed)."""

    template = "%(function)s(%(expressions)s, 'strict $.*')"


class IgnoreForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), help_text="Why is this entry ignored?")


class BulkIgnoreForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Why are these entries ignored? Recorded on each entry's audit trail.",
    )


class MatchForm(forms.Form):
    entry_id = forms.ChoiceField(label="Expected entry", widget=forms.RadioSelect)
    write_off = forms.BooleanField(
        required=False,
        label="Book the difference as a write-off",
        help_text="Needed when the amounts differ beyond the rule's tolerance: the "
        "whole difference is booked on the difference account.",
    )
    difference_account = forms.ChoiceField(
        required=False, label="Difference account", help_text="Only when the rule has no difference account."
    )
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Required for a write-off; recorded on the audit trail.",
    )


def decorate(entries: list[StagingEntry]) -> list[StagingEntry]:
    """Sets `task_status` (of the entry's task) and `rule_key` (the match key of the entry's rule: the rule whose
    account_one is the entry's account, else the oldest whose account_two is; `order_id` when none) on a page of
    entries: two queries whatever the page's size, and none in the list's count."""
    tasks = dict(
        ProcessTracker.objects.filter(pk__in=[e.task_id for e in entries if e.task_id]).values_list("task_id", "status")
    )
    accounts = {e.account_id for e in entries}
    keys: dict = {}
    for _one, two, key in (
        ReconRule.objects.filter(Q(account_one__in=accounts) | Q(account_two__in=accounts))
        .order_by("-created_at")
        .values_list("account_one_id", "account_two_id", "match_key")
    ):
        keys[two] = key  # the oldest rule's key wins for account_two ...
    for one, _, key in ReconRule.objects.filter(account_one__in=accounts).values_list(
        "account_one_id", "account_two_id", "match_key"
    ):
        keys[one] = key  # ... and account_one's rule over any
    for entry in entries:
        entry.task_status = tasks.get(entry.task_id)
        entry.rule_key = keys.get(entry.account_id, "order_id")
    return entries


class ReviewChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        self.result_list = decorate(list(self.result_list))


@admin.register(StagingEntry)
class StagingEntryAdmin(ReviewBulkMixin, AuditHistoryMixin, ReadOnlyPageMixin, AuditedFSMAdminMixin, admin.ModelAdmin):
    tenant_field = "account__merchant_id"
    fsm_fields = ["status"]
    fsm_forms = {"ignore": IgnoreForm}
    list_display = ["key_value", "amount_shown", "account", "reason", "age", "status", "task_status"]
    list_display_links = ["key_value"]
    list_filter = [ReviewQueueFilter, AccountFilter, ReasonFilter, AgeFilter, "status", "processing_mode"]
    list_select_related = ["account"]
    search_fields = ["staging_entry_id"]  # see get_search_results
    search_help_text = (
        "An order id or any other metadata value (exact), or a staging entry id; fastest in the review queue."
    )
    live_refresh = True  # the list refreshes itself (templates/admin/change_list.html)
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "entry",
                    "status",
                    "reason",
                    "account",
                    "processing_mode",
                    "entry_type",
                    "amount_shown",
                    "effective_date",
                    "metadata",
                    "idempotency_key",
                ]
            },
        ),
        ("Links", {"fields": ["links", "group_link"]}),
        ("Audit trail", {"fields": ["audit_trail"]}),
        ("Timestamps", {"fields": ["created_at", "updated_at", "discarded_at"]}),
    ]
    readonly_fields = [
        "entry",
        "reason",
        "account",
        "processing_mode",
        "entry_type",
        "amount_shown",
        "effective_date",
        "metadata",
        "idempotency_key",
        "links",
        "audit_trail",
        "created_at",
        "updated_at",
        "discarded_at",
        "group_link",
    ]
    actions = ["reprocess_selected", "ignore_selected", "match_selected"]

    def has_add_permission(self, request):
        return False  # created through the API, imports and commands (with their task)

    def has_delete_permission(self, request, obj=None):
        return False  # ignore (archive) with a reason instead

    def get_changelist(self, request, **kwargs):
        return ReviewChangeList

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        return decorate([obj])[0] if obj is not None else None

    def get_search_results(self, request, queryset, search_term):
        within = request.GET.get("queue")
        if within is None and request.GET.get("status__exact") == StagingStatus.NEEDS_MANUAL_REVIEW:
            within = "review"
        for term in search_term.split():
            queryset = metadata_search(queryset, term, within=within if within in ("review", "stuck") else None)
        return queryset, False

    # --- columns -------------------------------------------------------------------------------------
    def _key(self, obj) -> str | None:
        key = getattr(obj, "rule_key", None) or "order_id"
        value = (obj.metadata or {}).get(key)
        return None if value is None else str(value)

    @admin.display(description="key")
    def key_value(self, obj):
        return self._key(obj) or f"({str(obj.pk)[:8]}…)"

    @admin.display(description="amount", ordering="amount")
    def amount_shown(self, obj):
        return formatting.money(obj.amount, obj.currency)

    @admin.display(description="entry")
    def entry(self, obj):
        return f"{formatting.entry_label(key=self._key(obj), amount=obj.amount, currency=obj.currency)} ({obj.pk})"

    @admin.display(description="group")
    def group_link(self, obj):
        group = (obj.metadata or {}).get("group")
        if not group:
            return "-"
        return format_html(
            '<a href="{}">{} members, sum {}, confirmation {}, difference {}</a>',
            reverse("admin:recon_stagingentry_group", args=[obj.pk]),
            group["members"],
            group["sum"],
            group["confirmation_amount"],
            group["difference"],
        )

    @admin.display(description="task")
    def task_status(self, obj):
        return getattr(obj, "task_status", None) or "-"

    @admin.display(description="age", ordering="created_at")
    def age(self, obj):
        return formatting.age(obj.created_at)

    @admin.display(description="reason")
    def reason(self, obj):
        meta = obj.metadata or {}
        if meta.get("error_type"):
            text = f"{meta['error_type'].removesuffix('Error')}: {meta.get('error', '')}"
        elif getattr(obj, "task_status", None) in ("FAILED", "CANCELLED") and obj.status == StagingStatus.PENDING:
            text = f"task {obj.task_status.lower()}"
        else:
            text = meta.get("match_type", "") or meta.get("ignored_reason", "")
        short = text if len(text) <= 70 else text[:69] + "…"
        return format_html('<span title="{}">{}</span>', text, short)

    @admin.display(description="links")
    def links(self, obj):
        items = []
        if obj.task_id:
            task = ProcessTracker.objects.filter(pk=obj.task_id).first()
            items.append(("Task", _admin_link(task, f"{task.task_type} [{task.status}]") if task else str(obj.task_id)))
        upload = job = None
        source = (obj.metadata or {}).get("source_file")
        if source:
            upload = (
                Upload.objects.filter(account_id=obj.account_id, name=source, created_at__lte=obj.created_at)
                .order_by("-created_at")
                .first()
            )
        if upload is not None:
            items.append(("Upload", _admin_link(upload, upload.name)))
            from jobs.models import Job

            job = Job.objects.filter(params__upload_id=str(upload.pk)).order_by("-created_at").first()
            if job is not None:
                items.append(("Job", _admin_link(job, f"{job.job_type} [{job.state}]")))
        touched = Q(source_staging_entry=obj)
        if obj.mismatch_transaction_id:
            touched |= Q(pk=obj.mismatch_transaction_id)
        logical = list(Transaction.objects.filter(touched).values_list("logical_transaction_id", flat=True).distinct())
        versions = Transaction.objects.filter(logical_transaction_id__in=logical).order_by(
            "logical_transaction_id", "version"
        )
        if logical:
            items.append(
                (
                    "Transaction versions",
                    format_html_join(
                        ", ",
                        "{}",
                        ((_admin_link(t, f"{t.logical_transaction_id} v{t.version} {t.status}"),) for t in versions),
                    ),
                )
            )
        if not items:
            return "-"
        return format_html_join(mark_safe("<br>"), "{}: {}", items)

    @admin.display(description="audit trail")
    def audit_trail(self, obj):
        return audit_table(obj)

    # FSM buttons route through the services so tasks and mismatches follow.
    def _apply_fsm_transition(self, *, obj, transition_name, request, kwargs=None):
        action = {"reprocess": "reprocess", "ignore": "ignore"}.get(transition_name)
        if action is None:
            return super()._apply_fsm_transition(
                obj=obj, transition_name=transition_name, request=request, kwargs=kwargs
            )
        if not access.can_operate(request.user, obj.account.merchant_id):
            self.message_user(request, "Only operators of this merchant may do this.", messages.ERROR)
            return False
        try:
            services.staging_entry_resolve(
                staging_entry_id=obj.pk, action=action, by=request.user, reason=(kwargs or {}).get("reason", "")
            )
        except (AppError, ValidationError) as exc:
            self.message_user(request, f"{action} failed: {_error_text(exc)}", messages.ERROR)
            return False
        self.message_user(request, f"Staging entry {action} done.", messages.SUCCESS)
        return True

    # Actions: filter to legal states, call the service per entry, report done and skipped.
    def _resolve_many(self, request, queryset, action: str, reason: str = "") -> None:
        total = queryset.count()
        done, failures = 0, []
        for pk, merchant_id in queryset.filter(IN_REVIEW).values_list("pk", "account__merchant_id"):
            if not access.can_operate(request.user, merchant_id):
                failures.append(f"{pk}: not an operator")
                continue
            try:
                services.staging_entry_resolve(staging_entry_id=pk, action=action, by=request.user, reason=reason)
                done += 1
            except (AppError, ValidationError) as exc:
                failures.append(f"{pk}: {_error_text(exc)}")
        self.message_user(
            request,
            f"{action}: {done} done, {total - done} skipped" + (f" ({'; '.join(failures[:5])})" if failures else ""),
            messages.SUCCESS if done else messages.WARNING,
        )

    @admin.action(description="Reprocess selected (review queue only)")
    def reprocess_selected(self, request, queryset):
        self._resolve_many(request, queryset, "reprocess")

    @admin.action(description="Ignore selected, with a reason (archive; review queue only)")
    def ignore_selected(self, request, queryset):
        form = BulkIgnoreForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            self._resolve_many(request, queryset, "ignore", reason=form.cleaned_data["reason"])
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "form": form,
            "title": "Ignore staging entries",
            "queryset": queryset,
            "count": formatting.plural(queryset.count(), "staging entry", "staging entries"),
            "in_review": formatting.plural(queryset.filter(IN_REVIEW).count(), "is", "are"),
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/recon/stagingentry/ignore_selected.html", context)

    @admin.action(description="Match selected entry to an expected entry…")
    def match_selected(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one staging entry to match.", messages.WARNING)
            return None
        return redirect(reverse("admin:recon_stagingentry_match", args=[queryset.get().pk]))

    def get_urls(self):
        return [
            path("summary/", self.admin_site.admin_view(self.summary_view), name="recon_summary"),
            path(
                "<uuid:object_id>/match/", self.admin_site.admin_view(self.match_view), name="recon_stagingentry_match"
            ),
            path(
                "<uuid:object_id>/group/", self.admin_site.admin_view(self.group_view), name="recon_stagingentry_group"
            ),
            *super().get_urls(),
        ]

    def match_view(self, request, object_id):
        entry = self.get_object(request, str(object_id))
        if entry is None or entry.status != StagingStatus.NEEDS_MANUAL_REVIEW:
            self.message_user(request, "Only entries in review can be matched.", messages.ERROR)
            return redirect("admin:recon_stagingentry_changelist")
        if not access.can_operate(request.user, entry.account.merchant_id):
            self.message_user(request, "Only operators of this merchant may match entries.", messages.ERROR)
            return redirect("admin:recon_stagingentry_change", entry.pk)
        key_name = entry.rule_key or "order_id"
        key = (entry.metadata or {}).get(key_name)
        form = _match_form(request, entry, key_name=key_name, key=key)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                services.staging_entry_resolve(
                    staging_entry_id=entry.pk,
                    action="match",
                    by=request.user,
                    entry_id=data["entry_id"],
                    reason=data["reason"],
                    write_off=data["write_off"],
                    difference_account_id=data["difference_account"] or None,
                )
                self.message_user(
                    request, "Matched" + (" with a write-off." if data["write_off"] else "."), messages.SUCCESS
                )
                return redirect("admin:recon_stagingentry_change", entry.pk)
            except (AppError, ValidationError) as exc:
                self.message_user(request, f"Match failed: {_error_text(exc)}", messages.ERROR)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": entry,
            "form": form,
            "title": "Match to an expected entry",
            "key_name": key_name,
            "key": key,
            "label": self.entry(entry),
            "amount": formatting.money(entry.amount, entry.currency),
            "can_write_off": request.user.has_perm("recon.write_off"),
        }
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
            request.user, entry.account.merchant_id
        )
        if request.method == "POST" and can_resolve and form.is_valid():
            try:
                services.staging_entry_resolve_group(
                    staging_entry_id=entry.pk,
                    by=request.user,
                    reason=form.cleaned_data["reason"],
                    transaction_ids=form.cleaned_data["members"],
                    write_off=form.cleaned_data["write_off"],
                )
                self.message_user(request, "Group resolved.", messages.SUCCESS)
                return redirect("admin:recon_stagingentry_change", entry.pk)
            except (AppError, ValidationError, PermissionDenied) as exc:
                self.message_user(request, f"Resolve failed: {getattr(exc, 'message', exc)}", messages.ERROR)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": entry,
            "group": group,
            "members": members,
            "form": form,
            "can_resolve": can_resolve,
            "title": "Grouped match",
        }
        return render(request, "admin/recon/stagingentry/group.html", context)

    def summary_view(self, request):
        tenants = access.visible_tenants(request.user)
        data = reports.summary(request.GET.get("merchant_id") or None, merchant_ids=tenants)
        for currency, figures in data["amounts_by_currency"].items():
            figures["total_shown"] = formatting.money(figures["total"], currency)
            figures["count_shown"] = formatting.plural(figures.get("count", 0), "entry", "entries")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "summary": data,
            "title": "Reconciliation summary",
        }
        return TemplateResponse(request, "admin/recon/summary.html", context)


def _error_text(exc) -> str:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return " ".join(exc.messages)
    return getattr(exc, "message", str(exc))


# --- closed periods -----------------------------------------------------------------------------------


class ApproveForm(forms.Form):
    force = forms.BooleanField(
        required=False, label="Close although entries are still open", help_text="Audited with the reason below."
    )
    reason = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), help_text="Required when forcing."
    )

    def clean(self):
        data = super().clean()
        if data.get("force") and not (data.get("reason") or "").strip():
            self.add_error("reason", "A forced close needs a reason.")
        return data


def _match_form(request, entry, *, key_name: str, key) -> "MatchForm":
    """The match page's form: the account's open expected entries (the latest 200, those with the entry's key
    first and the first of them pre-selected) and the merchant's other accounts of its currency for the
    difference."""
    candidates = list(
        Entry.objects.filter(
            account=entry.account,
            status=EntryStatus.EXPECTED,
            transaction__status__in=(TransactionStatus.EXPECTED, TransactionStatus.MISMATCH),
        )
        .select_related("transaction", "transaction__rule")
        .order_by("-effective_date")[:200]
    )
    same = [c for c in candidates if key is not None and c.metadata.get(key_name) == key]
    candidates = same + [c for c in candidates if c not in same]
    form = MatchForm(request.POST or None, initial={"entry_id": str(same[0].pk)} if same else None)
    form.fields["entry_id"].choices = [
        (
            str(c.pk),
            formatting.entry_label(
                key=c.metadata.get(key_name), amount=c.amount, currency=c.currency, side=c.entry_type
            )
            + f" · {c.effective_date:%Y-%m-%d} · {c.transaction.logical_transaction_id} "
            f"v{c.transaction.version} [{c.transaction.status}]" + (" · same key" if c in same else ""),
        )
        for c in candidates
    ]
    accounts = (
        Account.objects.filter(merchant_id=entry.account.merchant_id, currency=entry.currency)
        .exclude(pk=entry.account_id)
        .order_by("account_name")
    )
    form.fields["difference_account"].choices = [("", "(the rule's difference account)")] + [
        (str(a.pk), a.account_name) for a in accounts
    ]
    return form


@admin.register(ClosedPeriod)
class ClosedPeriodAdmin(AuditHistoryMixin, ReadOnlyPageMixin, admin.ModelAdmin):
    """Periods are closed by a `recon.close_period` job once approved (on the confirmation page below) and
    reopened with the action; nothing here edits or deletes a period."""

    tenant_field = "merchant_id"
    # Staff reopen periods; operators close them through the close-period job: "change" only serves the approval
    # page (no object), every period's own page stays read-only.
    tenant_permissions = ("view", "change")

    list_display = ["merchant", "start_date", "end_date", "closed_by", "closed_when", "reopened_at"]
    list_select_related = ["merchant", "closed_by"]
    fields = readonly_fields = [
        "merchant",
        "start_date",
        "end_date",
        "closed_by",
        "closed_at",
        "reason",
        "reopened_by",
        "reopened_at",
        "audit_trail",
    ]
    actions = ["reopen_selected"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        pass  # periods change through services only (close, reopen)

    @admin.display(description="closed at", ordering="closed_at")
    def closed_when(self, obj):
        return formatting.when(obj.closed_at)

    @admin.display(description="audit trail")
    def audit_trail(self, obj):
        return audit_table(obj)

    def has_reopen_permission(self, request):
        return request.user.is_staff

    @admin.action(description="Reopen selected periods (staff)", permissions=["reopen"])
    def reopen_selected(self, request, queryset):
        total = queryset.count()
        done = 0
        for period in queryset.filter(reopened_at__isnull=True):
            services.period_reopen(period=period, by=request.user)
            done += 1
        self.message_user(request, f"reopened {done}, skipped {total - done} (already reopened)")

    def get_urls(self):
        return [
            path(
                "approve/<uuid:job_id>/",
                self.admin_site.admin_view(self.approve_view),
                name="recon_closedperiod_approve",
            ),
            *super().get_urls(),
        ]

    def approve_view(self, request, job_id):
        """Confirms the approval of a `recon.close_period` job: the period's figures now and what is still open,
        then sends `approve` (with `force` and `reason` when forced). The job applies the rule
        (`services.period_close`)."""
        from jobs import services as job_services
        from jobs.models import Job, JobState

        job = Job.objects.filter(pk=job_id, job_type="recon.close_period").first()
        if job is None or not access.can_see(request.user, job.merchant_id or ""):
            self.message_user(request, "Close-period job not found.", messages.ERROR)
            return redirect("admin:jobs_job_changelist")
        if not access.can_operate(request.user, job.merchant_id):
            raise PermissionDenied
        params = job.params
        start, end = dt.date.fromisoformat(params["start_date"]), dt.date.fromisoformat(params["end_date"])
        form = ApproveForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            payload = {"via": "admin"}
            if form.cleaned_data["force"]:
                payload.update(force=True, reason=form.cleaned_data["reason"].strip())
            try:
                job_services.job_signal(job_id=job.pk, name="approve", payload=payload, by=request.user)
            except AppError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(
                    request, "Approval sent" + (" (forced)." if payload.get("force") else "."), messages.SUCCESS
                )
            return redirect("admin:jobs_job_change", job.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "job": job,
            "form": form,
            "title": f"Approve closing {params['merchant_id']} {start}..{end}",
            "waiting": job.state == JobState.WAITING,
            **_period_figures(merchant_id=params["merchant_id"], start=start, end=end),
        }
        return TemplateResponse(request, "admin/recon/closedperiod/approve.html", context)


def _period_figures(*, merchant_id: str, start: dt.date, end: dt.date) -> dict:
    """What the approval page shows of a period: its summary, the open staging entries (the first 50) and their
    counts, the amounts per currency and status."""
    summary = reports.period_summary(merchant_id=merchant_id, start_date=start, end_date=end)
    open_entries = services.period_open_entries(merchant_id=merchant_id, start_date=start, end_date=end)
    counts = services.period_open_counts(merchant_id=merchant_id, start_date=start, end_date=end)
    shown = [
        (
            e,
            formatting.entry_label(key=(e.metadata or {}).get("order_id"), amount=e.amount, currency=e.currency),
            e.status,
            (e.metadata or {}).get("error_type", ""),
        )
        for e in open_entries.select_related("account").order_by("effective_date")[:50]
    ]
    amounts = [
        (currency, status, formatting.money(f["total"], currency), formatting.plural(f["count"], "entry", "entries"))
        for currency, by in summary["amounts_by_currency"].items()
        for status, f in by.items()
    ]
    return {
        "summary": summary,
        "counts": counts,
        "open_entries": shown,
        "amounts": amounts,
        "review_url": reverse("admin:recon_stagingentry_changelist") + "?queue=review",
        "open_text": formatting.plural(counts["total"], "staging entry", "staging entries"),
    }


# --- uploads ------------------------------------------------------------------------------------------


def _import_job(upload: Upload):
    from jobs.models import Job

    return Job.objects.filter(params__upload_id=str(upload.pk)).order_by("-created_at").first()


@admin.register(Upload)
class UploadAdmin(ReadOnlyAdmin):
    """Uploaded files (their bytes stay in the database; start imports from the account's page) with their
    import's report: the row errors as a table and a CSV download."""

    tenant_field = "account__merchant_id"

    list_display = ["name", "account", "size", "line_count", "created_by", "created_at"]
    list_select_related = ["account", "created_by"]
    search_fields = ["=upload_id", "name", "=sha256"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    readonly_fields = ["import_job", "import_errors"]

    @admin.display(description="import job")
    def import_job(self, obj):
        job = _import_job(obj)
        if job is None:
            return "-"
        result = job.result or {}
        return format_html(
            "{} · {} imported, {} failed",
            _admin_link(job, f"{job.job_type} [{job.state}]"),
            formatting.plural(result.get("successful_ingestions", 0), "entry", "entries"),
            formatting.plural(result.get("failed_ingestions", 0), "row"),
        )

    @admin.display(description="row errors")
    def import_errors(self, obj):
        job = _import_job(obj)
        errors = ((job.result or {}).get("errors") or []) if job is not None else []
        if not errors:
            return "none"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    e.get("row_number"),
                    e.get("error_details"),
                    ", ".join(f"{k}={v}" for k, v in (e.get("row_data") or {}).items()),
                )
                for e in errors[:200]
            ),
        )
        more = format_html("<p>Showing 200 of {}.</p>", len(errors)) if len(errors) > 200 else ""
        url = reverse("admin:recon_upload_errors_csv", args=[obj.pk])
        return format_html(
            '<p><a href="{}">Download all {} as CSV</a></p><table class="recon-errors"><thead><tr>'
            "<th>Row</th><th>Problem</th><th>Row data</th></tr></thead><tbody>{}</tbody></table>{}",
            url,
            formatting.plural(len(errors), "row error"),
            rows,
            more,
        )

    def get_urls(self):
        return [
            path(
                "<uuid:object_id>/errors.csv",
                self.admin_site.admin_view(self.errors_csv_view),
                name="recon_upload_errors_csv",
            ),
            *super().get_urls(),
        ]

    def errors_csv_view(self, request, object_id):
        upload = self.get_queryset(request).filter(pk=object_id).first()
        if upload is None:
            self.message_user(request, "Upload not found.", messages.ERROR)
            return redirect("admin:recon_upload_changelist")
        job = _import_job(upload)
        errors = ((job.result or {}).get("errors") or []) if job is not None else []
        columns = sorted({k for e in errors for k in (e.get("row_data") or {})})
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["row_number", "error_details", *columns])
        for e in errors:
            data = e.get("row_data") or {}
            writer.writerow([e.get("row_number"), e.get("error_details"), *[data.get(c, "") for c in columns]])
        response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{upload.name}.errors.csv"'
        return response


@admin.register(BankStatement)
class BankStatementAdmin(ReadOnlyAdmin):
    """The bank's statements as imported, with their balances, what did not add up, and the ledger's posted
    balance on each closing day next to the bank's."""

    tenant_field = "account__merchant_id"
    list_display = [
        "statement_id",
        "account",
        "format",
        "sequence",
        "opening_balance",
        "closing_balance",
        "closing_date",
        "ledger_balance",
        "line_count",
        "problem_list",
        "created_at",
    ]
    list_filter = ["format", ("closing_date", admin.DateFieldListFilter)]
    list_select_related = ["account", "upload"]
    search_fields = ["statement_id", "bank_account", "=upload__upload_id"]
    show_full_result_count = False
    paginator = CappedCountPaginator

    @admin.display(description="ledger posted balance on the closing day")
    def ledger_balance(self, obj):
        return "" if obj.closing_date is None else balances.posted_balance_on(obj.account, obj.closing_date)

    @admin.display(description="problems")
    def problem_list(self, obj):
        return ", ".join(p.replace("_", " ") for p in obj.problems) or "none"
