"""API representations (shared/API.md). Input validation lives in the services; these shape output and
parse the few input types that need it (decimals, dates)."""

import datetime as dt
from decimal import Decimal, InvalidOperation

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from recon import balances
from recon.ingest import parse_when
from recon.models import (MONEY_QUANTUM, Account, ClosedPeriod, Entry, MatchMode, Merchant, ReconRule, StagingEntry,
                          Transaction)


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
        fields = ["account_id", "merchant_id", "account_name", "account_type", "currency", "initial_balance",
                  "created_at", "updated_at", "balances"]

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
        fields = ["id", "merchant_id", "account_one_id", "account_two_id", "match_key", "amount_tolerance",
                  "amount_tolerance_pct", "date_window_days", "difference_account_id", "confirmation_key",
                  "confirmation_key_pattern", "match_mode", "group_key", "created_at"]


class ReconRuleCreateSerializer(serializers.Serializer):
    account_one_id = serializers.CharField()
    account_two_id = serializers.CharField()
    match_key = serializers.CharField(required=False, max_length=100)
    amount_tolerance = MoneyField(required=False, default=Decimal("0"))
    amount_tolerance_pct = MoneyField(required=False, default=Decimal("0"))
    date_window_days = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=0)
    difference_account_id = serializers.CharField(required=False, allow_null=True, default=None)
    confirmation_key = serializers.CharField(required=False, allow_null=True, allow_blank=True, default=None,
                                             help_text="Metadata field of CONFIRMATION entries (default: match_key).")
    confirmation_key_pattern = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, default=None, trim_whitespace=False,
        help_text="A regular expression with one group: the confirmation's key is the group's first match in the "
                  "confirmation_key field; no match sends the entry to review (NoMatchFoundError).")
    match_mode = serializers.ChoiceField(choices=MatchMode.choices, required=False, default=MatchMode.ONE_TO_ONE)
    group_key = serializers.CharField(required=False, allow_null=True, allow_blank=True, default=None,
                                      help_text="one_to_many (required): the expectations' metadata field a group "
                                                "shares, e.g. payout_id.")

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
        fields = ["staging_entry_id", "account_id", "entry_type", "amount", "currency", "effective_date",
                  "processing_mode", "status", "metadata", "idempotency_key", "task_id", "created_at", "updated_at",
                  "discarded_at"]


class StagingEntryCreateSerializer(serializers.Serializer):
    entry_type = serializers.ChoiceField(choices=["DEBIT", "CREDIT"])
    amount = MoneyField()
    currency = serializers.CharField(max_length=3)
    effective_date = EffectiveDateField()
    processing_mode = serializers.ChoiceField(choices=["TRANSACTION", "CONFIRMATION"])
    metadata = serializers.DictField(required=False, default=dict)
    idempotency_key = serializers.CharField(required=False, allow_null=True, max_length=200, default=None)


class ResolveSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=["match", "ignore", "reprocess"])
    entry_id = serializers.CharField(required=False)
    reason = serializers.CharField(required=False, allow_blank=True, default="")

    def validate(self, attrs):
        if attrs["action"] == "match" and not attrs.get("entry_id"):
            raise serializers.ValidationError({"entry_id": "Required for action match."})
        if attrs["action"] == "ignore" and not attrs.get("reason", "").strip():
            raise serializers.ValidationError({"reason": "Required for action ignore."})
        return attrs


class EntrySerializer(serializers.ModelSerializer):
    transaction_id = serializers.UUIDField(read_only=True)
    account_id = serializers.UUIDField(read_only=True)
    amount = MoneyField()
    effective_date = EffectiveDateField()

    class Meta:
        model = Entry
        fields = ["entry_id", "transaction_id", "account_id", "entry_type", "amount", "currency", "status",
                  "effective_date", "metadata", "created_at"]


class TransactionSerializer(serializers.ModelSerializer):
    merchant_id = serializers.CharField(read_only=True)
    amount = MoneyField()
    entries = EntrySerializer(many=True, read_only=True)

    class Meta:
        model = Transaction
        fields = ["transaction_id", "logical_transaction_id", "version", "status", "amount", "currency",
                  "merchant_id", "metadata", "created_at", "entries"]


class TriggerSerializer(serializers.Serializer):
    timeout_ms = serializers.IntegerField(required=False, default=30000, min_value=1000, max_value=600000)


class TriggerResultSerializer(serializers.Serializer):
    processed = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    duration_ms = serializers.IntegerField()


class CsvUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="CSV with the header order_id, amount, currency, transaction_date, type; "
                                           "the name must end in .csv.")
    processing_mode = serializers.ChoiceField(choices=["TRANSACTION", "CONFIRMATION"])

    def validate_file(self, value):
        if not (value.name or "").lower().endswith(".csv"):
            raise serializers.ValidationError("The file name must end in .csv.")
        return value


class CsvUploadAcceptedSerializer(serializers.Serializer):
    job_id = serializers.UUIDField()
    status_url = serializers.CharField(help_text="The job: GET it for state, progress and (when COMPLETED) the "
                                                 "import report as `result`.")


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    code = serializers.CharField()
    details = serializers.DictField()


class ClosedPeriodSerializer(serializers.ModelSerializer):
    merchant_id = serializers.CharField(read_only=True)
    closed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    reopened_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ClosedPeriod
        fields = ["id", "merchant_id", "start_date", "end_date", "reason", "closed_by", "closed_at", "reopened_by",
                  "reopened_at"]
        read_only_fields = fields
