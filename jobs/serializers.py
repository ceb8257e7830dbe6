"""Jobs API shapes (shared/API.md, "Jobs")."""

from django.core.serializers.json import DjangoJSONEncoder
from rest_framework import serializers

from jobs.models import Job


class JobSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = ["job_id", "job_type", "params", "state", "progress", "step", "checkpoint", "result", "error",
                  "attempts", "created_at", "started_at", "finished_at", "heartbeat_at"]
        read_only_fields = fields


class JobCreateSerializer(serializers.Serializer):
    job_type = serializers.CharField(max_length=100)
    params = serializers.JSONField(required=False, default=dict, encoder=DjangoJSONEncoder)
    merchant_id = serializers.CharField(max_length=64, required=False, allow_blank=True, default="",
                                        help_text="Merchant the job belongs to (you must operate it); empty for "
                                                  "a personal job.")

    def validate_params(self, value):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return value


class JobSignalSerializer(serializers.Serializer):
    name = serializers.RegexField(r"^[A-Za-z0-9_.:-]{1,100}$", max_length=100,
                                  error_messages={"invalid": "Letters, digits, and _ . : - only."})
    payload = serializers.JSONField(required=False, default=dict, encoder=DjangoJSONEncoder)


class JobRetrySerializer(serializers.Serializer):
    from_start = serializers.BooleanField(required=False, default=False,
                                          help_text="Clear the checkpoint and start over instead of resuming.")
