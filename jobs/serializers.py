"""Jobs API shapes (shared/API.md, "Jobs")."""

from django.core.serializers.json import DjangoJSONEncoder
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jobs.models import Job, WorkflowStep


class WorkflowStepSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkflowStep
        fields = ["name", "state", "depends_on", "attempts", "max_attempts", "queued_at", "started_at", "finished_at",
                  "duration_ms", "next_attempt_at", "result", "error"]
        read_only_fields = fields


class WorkflowRefSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField()


class JobSerializer(serializers.ModelSerializer):
    workflow = serializers.SerializerMethodField()
    steps = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = ["job_id", "job_type", "schema_version", "params", "state", "progress", "step", "checkpoint",
                  "result", "error", "attempts", "created_at", "started_at", "finished_at", "heartbeat_at",
                  "workflow", "steps"]
        read_only_fields = fields

    @extend_schema_field(WorkflowRefSerializer(allow_null=True))
    def get_workflow(self, job) -> dict | None:
        if job.workflow_version is None:
            return None
        return {"name": job.job_type, "version": job.workflow_version}

    @extend_schema_field(WorkflowStepSerializer(many=True))
    def get_steps(self, job) -> list:
        if job.workflow_version is None:
            return []
        return WorkflowStepSerializer(sorted(job.workflow_steps.all(), key=lambda s: s.position), many=True).data


class JobCreateSerializer(serializers.Serializer):
    job_type = serializers.CharField(max_length=100)
    params = serializers.JSONField(required=False, default=dict, encoder=DjangoJSONEncoder)
    merchant_id = serializers.CharField(max_length=64, required=False, allow_blank=True, default="",
                                        help_text="Merchant the job belongs to (you must operate it); empty for "
                                                  "a personal job.")
    idempotency_key = serializers.CharField(max_length=200, required=False, allow_null=True, default=None,
                                            help_text="A repeated key (same user, same body) returns the existing job "
                                                      "(200); another body with it -> 409.")

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


class WorkflowStepDeclSerializer(serializers.Serializer):
    name = serializers.CharField()
    depends_on = serializers.ListField(child=serializers.CharField())
    max_attempts = serializers.IntegerField()


class WorkflowSerializer(serializers.Serializer):
    """A declared workflow (jobs.workflows.declare.Workflow): its latest version."""

    name = serializers.CharField()
    version = serializers.IntegerField()
    description = serializers.CharField()
    steps = serializers.SerializerMethodField()

    @extend_schema_field(WorkflowStepDeclSerializer(many=True))
    def get_steps(self, wf) -> list:
        return [{"name": n, "depends_on": list(wf.step(n).depends_on), "max_attempts": wf.step(n).attempts_for({})}
                for n in wf.order]


class WorkflowStatsQuerySerializer(serializers.Serializer):
    since = serializers.DateTimeField(required=False)
    workflow = serializers.CharField(required=False, max_length=100)
