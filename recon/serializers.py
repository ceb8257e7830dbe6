"""API representations (shared/API.md). Input validation lives in the services; these shape output and
parse the few input types that need it (decimals, dates)."""

import datetime as dt
import json
from decimal import Decimal, InvalidOperation

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.schema import ErrorSerializer  # noqa: F401  (re-exported: the views describe errors with it)
from recon import balances
from recon.ingest import PLAIN_AMOUNT, mapping_problems, parse_when
from recon.models import (
    MONEY_QUANTUM,
    Account,
    BankStatement,
    ClosedPeriod,
    Entry,
    MatchMode,
    Merchant,
    ProcessingMode,
    ReconRule,
    StagingEntry,
    Transaction,
)


def money_str(value) -> str | None:
    """Decimal as a string with at least 2 and at most 4 decimals ("100.50", "1.2345")."""
    if value is None:
        return None
    text = f"{Decimal(value).quantize(MONEY_QUANTUM):f}"
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"{whole}.{frac}"


@extend_schema_field(OpenApiTypes.STR)
class MoneyField(serializers.Field):
    """Decimal money: rendered as a string with 2-4 decimals, accepted as string or number."""

    def to_representation(self, value):
        return money_str(value)

    def to_internal_value(self, data):
        if isinstance(data, (bool, float)):
            raise serializers.ValidationError("Send amounts as strings or JSON numbers.")
        if isinstance(data, str) and not PLAIN_AMOUNT.fullmatch(data.strip()):
            raise serializers.ValidationError(
                "A valid decimal number is required (digits 0-9 and one '.': no "
                "thousands separators, underscores, exponents or other digits)."
            )
        try:
            value = Decimal(str(data).strip())
        except (InvalidOperation, ValueError):
            raise serializers.ValidationError("A valid decimal number is required.") from None
        if not value.is_finite():
            raise serializers.ValidationError("A valid decimal number is required.")
        return value


@extend_schema_field(OpenApiTypes.DATETIME)
class EffectiveDateField(serializers.Field):
    """A date (midnight UTC) or a date-time with timezone."""

    def to_representation(self, value):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError("A date or a date-time with timezone is required.")
        when = parse_when(data.strip())
        if when is None:
            raise serializers.ValidationError("A date (YYYY-MM-DD) or a date-time with timezone is required.")
        return when


class MerchantSerializer(serializers.ModelSerializer):
    merchant_id = serializers.CharField(required=False, allow_blank=True, max_length=64)
    merchant_name = serializers.CharField(max_length=200)

    class Meta:
        model = Merchant
        fields = ["merchant_id", "merchant_name", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class BalancesSerializer(serializers.Serializer):
    posted_balance = MoneyField()
    pending_balance = MoneyField()
    available_balance = MoneyField()


class AccountSerializer(serializers.ModelSerializer):
    merchant_id = serializers.CharField(read_only=True)
    initial_balance = MoneyField(required=False)
    balances = serializers.SerializerMethodField()

    class Meta:
        model = Account
        fields = [
            "account_id",
            "merchant_id",
            "account_name",
            "account_type",
            "currency",
            "initial_balance",
            "created_at",
            "updated_at",
            "balances",
        ]

    @extend_schema_field(BalancesSerializer)
    def get_balances(self, obj) -> dict:
        return {k: money_str(v) for k, v in balances.balances_of(obj).items()}


class AccountCreateSerializer(serializers.Serializer):
    account_name = serializers.CharField(max_length=200)
    account_type = serializers.ChoiceField(choices=["DEBIT_NORMAL", "CREDIT_NORMAL"])
    currency = serializers.CharField(max_length=3)
    initial_balance = MoneyField(required=False, default=Decimal("0"))


class AccountRenameSerializer(serializers.Serializer):
    account_name = serializers.CharField(max_length=200)


class BalanceSerializer(serializers.Serializer):
    account_id = serializers.UUIDField()
    currency = serializers.CharField()
    posted_balance = MoneyField()
    pending_balance = MoneyField()
    available_balance = MoneyField()


class ReconRuleSerializer(serializers.ModelSerializer):
    merchant_id = serializers.CharField(read_only=True)
    account_one_id = serializers.UUIDField(read_only=True)
    account_two_id = serializers.UUIDField(read_only=True)
    difference_account_id = serializers.UUIDField(read_only=True, allow_null=True)
    amount_tolerance = MoneyField()
    amount_tolerance_pct = MoneyField()

    class Meta:
        model = ReconRule
        fields = [
            "id",
            "merchant_id",
            "account_one_id",
            "account_two_id",
            "match_key",
            "amount_tolerance",
            "amount_tolerance_pct",
            "date_window_days",
            "difference_account_id",
            "confirmation_key",
            "confirmation_key_pattern",
            "match_mode",
            "group_key",
            "created_at",
        ]


class ReconRuleCreateSerializer(serializers.Serializer):
    account_one_id = serializers.CharField()
    account_two_id = serializers.CharField()
    match_key = serializers.CharField(required=False, max_length=100)
    amount_tolerance = MoneyField(required=False, default=Decimal("0"))
    amount_tolerance_pct = MoneyField(required=False, default=Decimal("0"))
    date_window_days = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=0, max_value=3650
    )
    difference_account_id = serializers.CharField(required=False, allow_null=True, default=None)
    confirmation_key = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text="Metadata field of CONFIRMATION entries (default: match_key).",
    )
    confirmation_key_pattern = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        trim_whitespace=False,
        help_text="A regular expression with one group: the confirmation's key is the group's first match in the "
        "confirmation_key field; no match sends the entry to review (NoMatchFoundError).",
    )
    match_mode = serializers.ChoiceField(choices=MatchMode.choices, required=False, default=MatchMode.ONE_TO_ONE)
    group_key = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text="one_to_many (required): the expectations' metadata field a group shares, e.g. payout_id.",
    )

    def validate(self, attrs):
        for name in ("amount_tolerance", "amount_tolerance_pct"):
            if attrs[name] < 0:
                raise serializers.ValidationError({name: "Must not be negative."})
        return attrs


class StagingEntrySerializer(serializers.ModelSerializer):
    account_id = serializers.UUIDField(read_only=True)
    amount = MoneyField()
    effective_date = EffectiveDateField()

    class Meta:
        model = StagingEntry
        fields = [
            "staging_entry_id",
            "account_id",
            "entry_type",
            "amount",
            "currency",
            "effective_date",
            "processing_mode",
            "status",
            "metadata",
            "idempotency_key",
            "task_id",
            "created_at",
            "updated_at",
            "discarded_at",
        ]


class StagingEntryCreateSerializer(serializers.Serializer):
    entry_type = serializers.ChoiceField(choices=["DEBIT", "CREDIT"])
    amount = MoneyField()
    currency = serializers.CharField(max_length=3)
    effective_date = EffectiveDateField()
    processing_mode = serializers.ChoiceField(choices=ProcessingMode.choices)
    metadata = serializers.DictField(required=False, default=dict)
    idempotency_key = serializers.CharField(required=False, allow_null=True, max_length=200, default=None)


class ResolveSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=["match", "ignore", "reprocess"])
    entry_id = serializers.CharField(required=False)
    reason = serializers.CharField(required=False, allow_blank=True, default="")
    write_off = serializers.BooleanField(
        required=False,
        default=False,
        help_text="match only: book a difference beyond the rule's tolerance on "
        "the difference account (needs recon.write_off and a reason).",
    )
    difference_account_id = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        help_text="match with write_off, when the rule has no difference "
        "account: an account of the same merchant and currency.",
    )

    def validate(self, attrs):
        if attrs["action"] == "match" and not attrs.get("entry_id"):
            raise serializers.ValidationError({"entry_id": "Required for action match."})
        if attrs["action"] == "ignore" and not attrs.get("reason", "").strip():
            raise serializers.ValidationError({"reason": "Required for action ignore."})
        if attrs["action"] == "match" and attrs.get("write_off") and not attrs.get("reason", "").strip():
            raise serializers.ValidationError({"reason": "Required for a write-off."})
        return attrs


class EntrySerializer(serializers.ModelSerializer):
    transaction_id = serializers.UUIDField(read_only=True)
    account_id = serializers.UUIDField(read_only=True)
    amount = MoneyField()
    effective_date = EffectiveDateField()

    class Meta:
        model = Entry
        fields = [
            "entry_id",
            "transaction_id",
            "account_id",
            "entry_type",
            "amount",
            "currency",
            "status",
            "effective_date",
            "metadata",
            "created_at",
        ]


class TransactionSerializer(serializers.ModelSerializer):
    merchant_id = serializers.CharField(read_only=True)
    amount = MoneyField()
    entries = EntrySerializer(many=True, read_only=True)

    class Meta:
        model = Transaction
        fields = [
            "transaction_id",
            "logical_transaction_id",
            "version",
            "status",
            "amount",
            "currency",
            "merchant_id",
            "metadata",
            "created_at",
            "entries",
        ]


class TriggerSerializer(serializers.Serializer):
    timeout_ms = serializers.IntegerField(required=False, default=30000, min_value=1000, max_value=600000)


class TriggerResultSerializer(serializers.Serializer):
    processed = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    duration_ms = serializers.IntegerField()


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="CSV (header order_id, amount, currency, transaction_date, type) or a "
        "bank statement (camt.052/053/054, MT940/942, OFX, BAI2); any name."
    )
    processing_mode = serializers.ChoiceField(choices=ProcessingMode.choices)
    format = serializers.ChoiceField(
        choices=["auto", "csv", "camt053", "mt940", "ofx", "bai2"],
        default="auto",
        help_text="`auto` recognises the format from the content, never the name.",
    )
    mapping = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=4000,
        help_text='CSV only, JSON text: the file\'s columns for our fields, e.g. {"order_id": "Reference", '
        '"amount": "Net"}, plus "date_format" (strftime), "decimal_separator" ("." or ","), "delimiter". '
        "Without a type column a negative amount is a Refund; unmapped columns go to the metadata.",
    )

    def validate_mapping(self, value):
        if not value.strip():
            return None
        try:
            mapping = json.loads(value)
        except ValueError:
            raise serializers.ValidationError("Not JSON text.") from None
        if problems := mapping_problems(mapping):
            raise serializers.ValidationError([f"{k}: {' '.join(v)}" for k, v in problems.items()])
        return mapping


class FileUploadAcceptedSerializer(serializers.Serializer):
    job_id = serializers.UUIDField()
    status_url = serializers.CharField(
        help_text="The job: GET it for state, progress and (when COMPLETED) the import report as `result`."
    )


@extend_schema_field({"type": "string", "nullable": True, "readOnly": True})
class UsernameField(serializers.SlugRelatedField):
    """The username of a user reference, or null (none, or the user was deleted)."""

    def __init__(self, **kwargs):
        super().__init__(slug_field="username", read_only=True, **kwargs)


class BankStatementSerializer(serializers.ModelSerializer):
    """A statement of an imported bank file with the bank's balances, what did not add up (`problems`:
    `lines_do_not_add_up`, `opening_differs`, `sequence_gap`), and the ledger's posted balance on its closing day
    next to the bank's closing balance."""

    account_id = serializers.UUIDField(read_only=True)
    upload_id = serializers.UUIDField(read_only=True)
    opening_balance = MoneyField(read_only=True, allow_null=True)
    closing_balance = MoneyField(read_only=True, allow_null=True)
    lines_total = MoneyField(read_only=True)
    ledger_balance = serializers.SerializerMethodField(
        help_text="The account's posted balance of entries dated up to the closing day (null without one)."
    )
    difference = serializers.SerializerMethodField(help_text="closing_balance - ledger_balance.")

    class Meta:
        model = BankStatement
        fields = [
            "id",
            "account_id",
            "upload_id",
            "format",
            "statement_id",
            "bank_account",
            "sequence",
            "currency",
            "opening_balance",
            "opening_date",
            "closing_balance",
            "closing_date",
            "line_count",
            "lines_total",
            "problems",
            "ledger_balance",
            "difference",
            "created_at",
        ]
        read_only_fields = fields

    def _ledger(self, obj):
        if obj.closing_date is None:
            return None
        if not hasattr(obj, "_ledger_balance"):
            obj._ledger_balance = balances.posted_balance_on(obj.account, obj.closing_date)
        return obj._ledger_balance

    @extend_schema_field(OpenApiTypes.STR)
    def get_ledger_balance(self, obj) -> str | None:
        return money_str(self._ledger(obj))

    @extend_schema_field(OpenApiTypes.STR)
    def get_difference(self, obj) -> str | None:
        value = self._ledger(obj)
        return None if value is None or obj.closing_balance is None else money_str(obj.closing_balance - value)


class ClosedPeriodSerializer(serializers.ModelSerializer):
    merchant_id = serializers.CharField(read_only=True)
    closed_by = UsernameField()
    reopened_by = UsernameField()

    class Meta:
        model = ClosedPeriod
        fields = [
            "id",
            "merchant_id",
            "start_date",
            "end_date",
            "reason",
            "closed_by",
            "closed_at",
            "reopened_by",
            "reopened_at",
        ]
        read_only_fields = fields
