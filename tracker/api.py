"""Tasks API (shared/API.md, "Process tracker") and the health check. Thin: services do the work."""

import uuid

import django_filters
from django.db import connection
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from tracker import access, services
from tracker.models import ProcessTracker, TaskStatus
from tracker.serializers import TaskDetailSerializer, TaskSerializer


class TaskFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=TaskStatus.choices)
    task_type = django_filters.CharFilter()
    queue = django_filters.CharFilter()

    class Meta:
        model = ProcessTracker
        fields = ["status", "task_type", "queue"]


class TaskViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = TaskSerializer
    filterset_class = TaskFilter
    lookup_field = "task_id"
    lookup_value_regex = "[^/]+"

    def get_queryset(self):
        return access.scope(ProcessTracker.objects.order_by("-created_at", "task_id"), self.request.user)

    def get_serializer_class(self):
        return TaskDetailSerializer if self.action != "list" else TaskSerializer

    def get_object(self):
        try:
            task_id = uuid.UUID(str(self.kwargs["task_id"]))
        except ValueError:
            raise NotFound("Task not found.") from None
        task = self.get_queryset().filter(task_id=task_id).first()
        if task is None:
            raise NotFound("Task not found.")
        return task

    def _operate(self, service) -> Response:
        task = self.get_object()
        if not access.can_operate(self.request.user, task.tenant):
            raise PermissionDenied("Only operators may change tasks.")
        task = service(task_id=task.task_id, by=self.request.user)
        return Response(TaskDetailSerializer(task).data)

    @extend_schema(request=None, responses=TaskDetailSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, task_id=None):
        """FAILED or CANCELLED -> PENDING with a fresh set of attempts (409 otherwise). Operators only."""
        return self._operate(services.task_retry)

    @extend_schema(request=None, responses=TaskDetailSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, task_id=None):
        """PENDING or RETRY -> CANCELLED (409 otherwise). Operators only."""
        return self._operate(services.task_cancel)

    @extend_schema(responses=dict)
    @action(detail=False, methods=["get"])
    def stats(self, request):
        """Counts per status and type, oldest due task age, throughput of the last minute and hour."""
        return Response(services.task_stats(queryset=self.filter_queryset(self.get_queryset())))


class HealthView(APIView):
    """200 while the database answers (503 otherwise); cluster liveness is reported, not judged. Anyone sees
    the figures; only staff see worker ids (host names, pids) and the database's error text."""

    permission_classes = [AllowAny]
    throttle_classes = []

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request):
        from tracker.worker import cluster_status

        staff = bool(getattr(request.user, "is_staff", False))
        now = timezone.now().isoformat()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as exc:
            database = {"connected": False, **({"error": str(exc)[:200]} if staff else {})}
            return Response({"status": "error", "database": database, "cluster": {}, "timestamp": now}, status=503)
        cluster = cluster_status()
        if not staff:
            cluster["heartbeats"] = [{k: v for k, v in beat.items() if k != "worker_id"}
                                     for beat in cluster.get("heartbeats", [])]
        return Response({"status": "ok", "database": {"connected": True},
                         "cluster": cluster, "timestamp": now})
