"""Recon HTTP API (shared/API.md). Thin: look up objects the caller can see (404 otherwise, before any role
check), check the role, call a service, render."""

import datetime as dt
import uuid

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.files.uploadhandler import FileUploadHandler
from django.db.models import F
from django.db.models.fields.json import KeyTextTransform
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from config.api import Pagination
from recon import access, balances, exports, reports, services, uploads
from recon.balances import with_balance_sums
from recon.models import (
    Account,
    BankStatement,
    ClosedPeriod,
    Entry,
    EntryStatus,
    Merchant,
    ReconRule,
    StagingEntry,
    StagingStatus,
    Transaction,
    TransactionStatus,
)
from recon.serializers import (
    AccountCreateSerializer,
    AccountRenameSerializer,
    AccountSerializer,
    BalanceSerializer,
    BankStatementSerializer,
    ClosedPeriodSerializer,
    EntrySerializer,
    ErrorSerializer,
    FileUploadAcceptedSerializer,
    FileUploadSerializer,
    MerchantSerializer,
    ReconRuleCreateSerializer,
    ReconRuleSerializer,
    ResolveSerializer,
    StagingEntryCreateSerializer,
    StagingEntrySerializer,
    TransactionSerializer,
    TriggerResultSerializer,
    TriggerSerializer,
    money_str,
)

# --- lookups and checks -------------------------------------------------------------------------------


def _visible(request, merchant_id: str) -> bool:
    return access.can_see(request.user, merchant_id)


def get_merchant(request, merchant_id) -> Merchant:
    merchant = Merchant.objects.filter(pk=str(merchant_id)).first()
    if merchant is None or not _visible(request, merchant.pk):
        raise exceptions.NotFound("Merchant not found.")
    return merchant


def _uuid(value, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise exceptions.NotFound(f"{what} not found.") from None


def get_account(request, account_id, queryset=None) -> Account:
    qs = Account.objects.all() if queryset is None else queryset
    account = qs.filter(pk=_uuid(account_id, "Account")).first()
    if account is None or not _visible(request, account.merchant_id):
        raise exceptions.NotFound("Account not found.")
    return account


def require_operator(request, merchant_id: str) -> None:
    if not access.can_operate(request.user, merchant_id):
        raise exceptions.PermissionDenied("Only operators of this merchant may do this.")


def scope(request, queryset, field: str):
    tenants = access.visible_tenants(request.user)
    return queryset if tenants is None else queryset.filter(**{f"{field}__in": tenants})


def paginated(view, request, queryset, serializer_class):
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


def status_filter(request, choices) -> str | None:
    value = request.query_params.get("status")
    if value in (None, ""):
        return None
    if value not in choices:
        raise exceptions.ValidationError({"status": [f"One of {', '.join(choices)}."]})
    return value


# --- merchants ----------------------------------------------------------------------------------------


class MerchantListView(GenericAPIView):
    serializer_class = MerchantSerializer
    queryset = Merchant.objects.none()  # for the schema only; lists are scoped per request

    @extend_schema(operation_id="merchants_list", responses={200: MerchantSerializer(many=True)})
    def get(self, request):
        return paginated(
            self, request, scope(request, Merchant.objects.order_by("merchant_id"), "pk"), MerchantSerializer
        )

    @extend_schema(request=MerchantSerializer, responses={201: MerchantSerializer})
    def post(self, request):
        if not request.user.is_staff:
            raise exceptions.PermissionDenied("Only staff create merchants.")
        data = MerchantSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        merchant = services.merchant_create(
            merchant_name=data.validated_data["merchant_name"], merchant_id=data.validated_data.get("merchant_id")
        )
        return Response(MerchantSerializer(merchant).data, status=status.HTTP_201_CREATED)


class MerchantDetailView(GenericAPIView):
    serializer_class = MerchantSerializer

    def get(self, request, merchant_id):
        return Response(MerchantSerializer(get_merchant(request, merchant_id)).data)


# --- accounts -----------------------------------------------------------------------------------------


class AccountListView(GenericAPIView):
    serializer_class = AccountSerializer
    queryset = Account.objects.none()  # for the schema only; lists are scoped per request

    @extend_schema(operation_id="merchants_accounts_list", responses={200: AccountSerializer(many=True)})
    def get(self, request, merchant_id):
        merchant = get_merchant(request, merchant_id)
        qs = with_balance_sums(Account.objects.filter(merchant=merchant)).order_by("created_at", "account_id")
        return paginated(self, request, qs, AccountSerializer)

    @extend_schema(request=AccountCreateSerializer, responses={201: AccountSerializer})
    def post(self, request, merchant_id):
        merchant = get_merchant(request, merchant_id)
        require_operator(request, merchant.pk)
        data = AccountCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        account = services.account_create(merchant=merchant, **data.validated_data)
        return Response(AccountSerializer(account).data, status=status.HTTP_201_CREATED)


class AccountDetailView(GenericAPIView):
    serializer_class = AccountSerializer

    def _get(self, request, merchant_id, account_id) -> Account:
        merchant = get_merchant(request, merchant_id)
        return get_account(request, account_id, Account.objects.filter(merchant=merchant))

    def get(self, request, merchant_id, account_id):
        return Response(AccountSerializer(self._get(request, merchant_id, account_id)).data)

    def _rename(self, request, merchant_id, account_id, *, partial: bool):
        account = self._get(request, merchant_id, account_id)
        require_operator(request, account.merchant_id)
        data = AccountRenameSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        if "account_name" in data.validated_data:
            account = services.account_rename(account=account, account_name=data.validated_data["account_name"])
        return Response(AccountSerializer(account).data)

    @extend_schema(request=AccountRenameSerializer, responses={200: AccountSerializer})
    def put(self, request, merchant_id, account_id):
        return self._rename(request, merchant_id, account_id, partial=False)

    @extend_schema(request=AccountRenameSerializer, responses={200: AccountSerializer})
    def patch(self, request, merchant_id, account_id):
        """Like PUT, but `account_name` may be left out (then nothing changes)."""
        return self._rename(request, merchant_id, account_id, partial=True)

    def delete(self, request, merchant_id, account_id):
        account = self._get(request, merchant_id, account_id)
        require_operator(request, account.merchant_id)
        services.account_delete(account=account)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AccountBalancesView(GenericAPIView):
    serializer_class = BalanceSerializer

    def get(self, request, account_id):
        account = get_account(request, account_id)
        figures = {k: money_str(v) for k, v in balances.balances_of(account).items()}
        return Response({"account_id": str(account.pk), "currency": account.currency, **figures})


# --- recon rules --------------------------------------------------------------------------------------


class ReconRuleListView(GenericAPIView):
    serializer_class = ReconRuleSerializer
    queryset = ReconRule.objects.none()  # for the schema only; lists are scoped per request

    @extend_schema(operation_id="merchants_recon_rules_list", responses={200: ReconRuleSerializer(many=True)})
    def get(self, request, merchant_id):
        merchant = get_merchant(request, merchant_id)
        return paginated(
            self, request, ReconRule.objects.filter(merchant=merchant).order_by("created_at", "id"), ReconRuleSerializer
        )

    @extend_schema(request=ReconRuleCreateSerializer, responses={201: ReconRuleSerializer})
    def post(self, request, merchant_id):
        merchant = get_merchant(request, merchant_id)
        require_operator(request, merchant.pk)
        data = ReconRuleCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        rule = services.recon_rule_create(merchant=merchant, **data.validated_data)
        return Response(ReconRuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class ReconRuleDetailView(GenericAPIView):
    serializer_class = ReconRuleSerializer

    def _get(self, request, merchant_id, rule_id) -> ReconRule:
        merchant = get_merchant(request, merchant_id)
        rule = ReconRule.objects.filter(merchant=merchant, pk=_uuid(rule_id, "Recon rule")).first()
        if rule is None:
            raise exceptions.NotFound("Recon rule not found.")
        return rule

    def get(self, request, merchant_id, rule_id):
        return Response(ReconRuleSerializer(self._get(request, merchant_id, rule_id)).data)

    def delete(self, request, merchant_id, rule_id):
        rule = self._get(request, merchant_id, rule_id)
        require_operator(request, rule.merchant_id)
        services.recon_rule_delete(rule=rule)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- staging entries ----------------------------------------------------------------------------------


class StagingEntryListView(GenericAPIView):
    serializer_class = StagingEntrySerializer
    queryset = StagingEntry.objects.none()  # for the schema only; lists are scoped per request

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=StagingStatus.values)],
        responses={200: StagingEntrySerializer(many=True)},
    )
    def get(self, request, account_id):
        account = get_account(request, account_id)
        qs = StagingEntry.objects.filter(account=account).order_by("-created_at", "staging_entry_id")
        if (value := status_filter(request, StagingStatus.values)) is not None:
            qs = qs.filter(status=value)
        return paginated(self, request, qs, StagingEntrySerializer)

    @extend_schema(
        request=StagingEntryCreateSerializer, responses={201: StagingEntrySerializer, 200: StagingEntrySerializer}
    )
    def post(self, request, account_id):
        account = get_account(request, account_id)
        require_operator(request, account.merchant_id)
        data = StagingEntryCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        entry, created = services.staging_entry_create(account=account, **data.validated_data)
        return Response(
            StagingEntrySerializer(entry).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class UploadSizeLimitHandler(FileUploadHandler):
    """Counts the bytes of the uploaded files while Django streams them and stops at the upload limit (413),
    whatever the request's Content-Length said (chunked requests have none)."""

    def __init__(self, request=None):
        super().__init__(request)
        self.total, self.limit = 0, uploads.max_bytes()

    def receive_data_chunk(self, raw_data, start):
        self.total += len(raw_data)
        if self.total > self.limit:
            raise uploads.too_large()
        return raw_data

    def file_complete(self, file_size):
        return None


MULTIPART_SLACK = 64 * 1024  # boundaries and the other form fields, on top of the file's bytes


def _truthy(value) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


class StagingEntryFileView(GenericAPIView):
    serializer_class = FileUploadSerializer
    parser_classes = [MultiPartParser, FormParser]

    def initialize_request(self, request, *args, **kwargs):
        request.upload_handlers.insert(0, UploadSizeLimitHandler(request))
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(
        operation_id="accounts_staging_entries_files_create",
        request={"multipart/form-data": FileUploadSerializer},
        parameters=[
            OpenApiParameter(
                "force", bool, description="Import even if the same file content was uploaded to this account before."
            )
        ],
        responses={
            202: FileUploadAcceptedSerializer,
            400: OpenApiResponse(
                ErrorSerializer,
                description="No file, a missing or invalid processing_mode, a "
                "file of no supported format (code "
                "`unsupported_format`), or a CSV header that lacks a "
                "column (code `invalid_csv`). Problems in CSV rows "
                "end in the job's report; a statement file that "
                "cannot be parsed fails the job, writing nothing.",
            ),
            403: OpenApiResponse(ErrorSerializer, description="Not an operator of the account's merchant."),
            404: OpenApiResponse(ErrorSerializer, description="Unknown account, or another merchant's."),
            409: OpenApiResponse(
                ErrorSerializer,
                description="Same content already uploaded to this account (code `duplicate_upload`); use ?force=true.",
            ),
            413: OpenApiResponse(ErrorSerializer, description="Above UPLOAD_MAX_BYTES (code `payload_too_large`)."),
        },
    )
    def post(self, request, account_id):
        """Uploads a CSV or bank-statement file of staging entries; the import runs as a `recon.import_file` job
        whose `result` is the report. The file is stored in the database, so any worker can run the job."""
        account = get_account(request, account_id)
        require_operator(request, account.merchant_id)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > uploads.max_bytes() + MULTIPART_SLACK:
            raise uploads.too_large(length)
        try:
            data = FileUploadSerializer(data=request.data)
        except RequestDataTooBig:
            raise uploads.too_large() from None
        except SuspiciousOperation as exc:
            raise exceptions.ValidationError({"file": [str(exc) or "Malformed upload."]}) from None
        data.is_valid(raise_exception=True)
        file = data.validated_data["file"]
        job = uploads.file_import_start(
            account=account,
            file=file,
            name=file.name,
            processing_mode=data.validated_data["processing_mode"],
            file_format_name=data.validated_data["format"],
            mapping=data.validated_data.get("mapping"),
            force=_truthy(request.query_params.get("force")),
            by=request.user,
        )
        return Response({"job_id": str(job.pk), "status_url": f"/api/jobs/{job.pk}/"}, status=status.HTTP_202_ACCEPTED)


def get_staging_entry(request, staging_entry_id) -> StagingEntry:
    entry = StagingEntry.objects.select_related("account").filter(pk=_uuid(staging_entry_id, "Staging entry")).first()
    if entry is None or not _visible(request, entry.account.merchant_id):
        raise exceptions.NotFound("Staging entry not found.")
    return entry


class StagingEntryDetailView(GenericAPIView):
    serializer_class = StagingEntrySerializer

    def get(self, request, staging_entry_id):
        return Response(StagingEntrySerializer(get_staging_entry(request, staging_entry_id)).data)


class StagingEntryResolveView(GenericAPIView):
    serializer_class = ResolveSerializer

    @extend_schema(request=ResolveSerializer, responses={200: StagingEntrySerializer})
    def post(self, request, staging_entry_id):
        entry = get_staging_entry(request, staging_entry_id)
        require_operator(request, entry.account.merchant_id)
        data = ResolveSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        entry = services.staging_entry_resolve(staging_entry_id=entry.pk, by=request.user, **data.validated_data)
        return Response(StagingEntrySerializer(entry).data)


# --- ledger -------------------------------------------------------------------------------------------


class TransactionListView(GenericAPIView):
    serializer_class = TransactionSerializer
    queryset = Transaction.objects.none()  # for the schema only; lists are scoped per request

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=TransactionStatus.values),
            OpenApiParameter("logical_transaction_id", str),
            OpenApiParameter("version", int),
            OpenApiParameter(
                "match_group",
                str,
                description="The transactions of one group (grouped matching: metadata.match_group).",
            ),
        ],
        responses={200: TransactionSerializer(many=True)},
    )
    def get(self, request, merchant_id):
        merchant = get_merchant(request, merchant_id)
        qs = (
            Transaction.objects.filter(merchant=merchant)
            .prefetch_related("entries")
            .order_by("-created_at", "transaction_id")
        )
        if (value := status_filter(request, TransactionStatus.values)) is not None:
            qs = qs.filter(status=value)
        if logical := request.query_params.get("logical_transaction_id"):
            qs = qs.filter(logical_transaction_id=logical)
        if (version := request.query_params.get("version")) not in (None, ""):
            if not version.isdigit():
                raise exceptions.ValidationError({"version": ["A positive integer is required."]})
            qs = qs.filter(version=int(version))
        if group := request.query_params.get("match_group"):
            qs = qs.alias(match_group=KeyTextTransform("match_group", "metadata")).filter(match_group=group)
        return paginated(self, request, qs, TransactionSerializer)


class AccountEntryListView(GenericAPIView):
    serializer_class = EntrySerializer
    queryset = Entry.objects.none()  # for the schema only; lists are scoped per request

    @extend_schema(
        parameters=[OpenApiParameter("status", str, enum=EntryStatus.values)],
        responses={200: EntrySerializer(many=True)},
    )
    def get(self, request, account_id):
        account = get_account(request, account_id)
        qs = Entry.objects.filter(account=account).order_by("-effective_date", "-created_at", "entry_id")
        if (value := status_filter(request, EntryStatus.values)) is not None:
            qs = qs.filter(status=value)
        return paginated(self, request, qs, EntrySerializer)


class AccountStatementListView(GenericAPIView):
    serializer_class = BankStatementSerializer
    queryset = BankStatement.objects.none()  # for the schema only; lists are scoped per request

    @extend_schema(operation_id="accounts_statements_list", responses={200: BankStatementSerializer(many=True)})
    def get(self, request, account_id):
        """The bank statements imported to the account, newest closing day first, each with the bank's balances,
        the problems found (lines not adding up, an opening balance that is not the previous closing one, a gap
        in the statement numbers) and the ledger's posted balance on its closing day."""
        account = get_account(request, account_id)
        qs = (
            BankStatement.objects.filter(account=account)
            .select_related("account")
            .order_by(F("closing_date").desc(nulls_last=True), "-created_at")
        )
        return paginated(self, request, qs, BankStatementSerializer)


class ExportView(GenericAPIView):
    serializer_class = None
    TABLES = ("review-queue", "unmatched-expectations", "transactions", "period-summary")

    def perform_content_negotiation(self, request, force=False):
        """`?format=` names the export's file format here, not a DRF renderer (errors stay JSON)."""
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="merchants_exports_retrieve",
        parameters=[
            OpenApiParameter("table", str, OpenApiParameter.PATH, enum=TABLES),
            OpenApiParameter("format", str, enum=exports.FORMATS, description="csv (default) or xlsx"),
            OpenApiParameter("account_id", str, description="review-queue, unmatched-expectations: one account only"),
            OpenApiParameter("start_date", str, description="transactions, period-summary (YYYY-MM-DD)"),
            OpenApiParameter("end_date", str, description="transactions, period-summary (YYYY-MM-DD)"),
        ],
        responses={
            (200, "text/csv"): OpenApiTypes.BINARY,
            400: OpenApiResponse(ErrorSerializer, description="Bad format, account or dates."),
            404: OpenApiResponse(ErrorSerializer, description="Unknown merchant or table."),
        },
    )
    def get(self, request, merchant_id, table):
        """A table streamed as CSV or XLSX: the review queue, unmatched expectations with their age, a
        period's ledger legs, or the period-close summary. Formula-like text is written inert."""
        merchant = get_merchant(request, merchant_id)
        if table not in self.TABLES:
            raise exceptions.NotFound("Unknown export.")
        fmt = request.query_params.get("format") or "csv"
        if fmt not in exports.FORMATS:
            raise exceptions.ValidationError({"format": [f"One of {', '.join(exports.FORMATS)}."]})
        account_id = request.query_params.get("account_id")
        if table in ("review-queue", "unmatched-expectations"):
            scope = {"account__merchant": merchant}
            if account_id:
                scope["account"] = get_account(request, account_id, Account.objects.filter(merchant=merchant))
            data = (
                exports.review_queue(StagingEntry.objects.filter(**scope))
                if table == "review-queue"
                else exports.unmatched_expectations(Entry.objects.filter(**scope))
            )
        else:
            dates = _period_dates(request)
            make = exports.period_transactions if table == "transactions" else exports.period_summary
            data = make(merchant_id=merchant.pk, **dates)
        response = StreamingHttpResponse(exports.RENDERERS[fmt](data), content_type=exports.CONTENT_TYPES[fmt])
        response["Content-Disposition"] = f'attachment; filename="{exports.filename(data, fmt)}"'
        return response


def _period_dates(request) -> dict:
    problems, dates = {}, {}
    for name in ("start_date", "end_date"):
        try:
            dates[name] = dt.date.fromisoformat(request.query_params.get(name) or "")
        except ValueError:
            problems[name] = ["A date (YYYY-MM-DD) is required."]
    if not problems and dates["end_date"] < dates["start_date"]:
        problems["end_date"] = ["Must not be before start_date."]
    if problems:
        raise exceptions.ValidationError(problems)
    return dates


# --- closed periods -----------------------------------------------------------------------------------


class ClosedPeriodListView(GenericAPIView):
    serializer_class = ClosedPeriodSerializer
    queryset = ClosedPeriod.objects.none()  # for the schema only; lists are scoped per request

    @extend_schema(operation_id="merchants_periods_list", responses={200: ClosedPeriodSerializer(many=True)})
    def get(self, request, merchant_id):
        """The merchant's closed periods (reopened ones too, with `reopened_at`), newest first. Periods are
        closed by a `recon.close_period` job (POST /api/jobs/) once an operator approves it."""
        merchant = get_merchant(request, merchant_id)
        qs = (
            ClosedPeriod.objects.filter(merchant=merchant)
            .select_related("closed_by", "reopened_by")
            .order_by("-start_date", "-id")
        )
        return paginated(self, request, qs, ClosedPeriodSerializer)


class ClosedPeriodReopenView(GenericAPIView):
    serializer_class = ClosedPeriodSerializer

    @extend_schema(request=None, responses={200: ClosedPeriodSerializer})
    def post(self, request, merchant_id, period_id):
        """Reopens a closed period (staff only); 409 when it is already reopened."""
        merchant = get_merchant(request, merchant_id)
        period = None
        if str(period_id).isdigit():
            period = ClosedPeriod.objects.filter(merchant=merchant, pk=int(period_id)).first()
        if period is None:
            raise exceptions.NotFound("Closed period not found.")
        if not request.user.is_staff:
            raise exceptions.PermissionDenied("Only staff reopen periods.")
        period = services.period_reopen(period=period, by=request.user)
        return Response(ClosedPeriodSerializer(period).data)


# --- recon engine -------------------------------------------------------------------------------------


class TriggerView(GenericAPIView):
    serializer_class = TriggerSerializer

    @extend_schema(request=TriggerSerializer, responses={200: TriggerResultSerializer})
    def post(self, request):
        if not request.user.is_staff:
            raise exceptions.PermissionDenied("Only staff trigger the recon engine.")
        data = TriggerSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(services.engine_trigger(timeout_ms=data.validated_data["timeout_ms"]))


class SummaryView(GenericAPIView):
    serializer_class = None

    @extend_schema(parameters=[OpenApiParameter("merchant_id", str)], responses={200: dict})
    def get(self, request):
        merchant_id = request.query_params.get("merchant_id") or None
        if merchant_id is not None:
            get_merchant(request, merchant_id)
        tenants = access.visible_tenants(request.user)
        data = reports.summary(merchant_id, merchant_ids=tenants)
        for figures in data["amounts_by_currency"].values():
            figures["total"] = money_str(figures["total"])
            for by in figures["by_status"].values():
                by["total"] = money_str(by["total"])
        return Response(data)
