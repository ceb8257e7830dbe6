from rest_framework import serializers

from tracker.models import ProcessTracker, Transition


class TransitionSerializer(serializers.ModelSerializer):
    by = serializers.CharField(read_only=True)

    class Meta:
        model = Transition
        fields = ["from_status", "to_status", "at", "by", "reason"]


class TaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProcessTracker
        fields = [
            "task_id",
            "task_type",
            "queue",
            "tenant",
            "payload",
            "status",
            "attempts",
            "max_attempts",
            "last_error",
            "run_after",
            "created_at",
            "updated_at",
            "processing_started_at",
            "completed_at",
        ]
        read_only_fields = fields


class TaskDetailSerializer(TaskSerializer):
    transitions = serializers.SerializerMethodField()

    class Meta(TaskSerializer.Meta):
        fields = TaskSerializer.Meta.fields + ["error_details", "transitions"]
        read_only_fields = fields

    def get_transitions(self, task) -> list[dict]:
        from tracker.audit import history

        return TransitionSerializer(history(task), many=True).data


class QueueSerializer(serializers.Serializer):
    """A queue (API.md "Queues"): its tasks due and running, the age of its oldest due task, its completions in the
    last minute, and whether it is paused."""

    name = serializers.CharField()
    paused = serializers.BooleanField()
    due = serializers.IntegerField()
    running = serializers.IntegerField()
    oldest_due_seconds = serializers.FloatField()
    completed_last_minute = serializers.IntegerField()
