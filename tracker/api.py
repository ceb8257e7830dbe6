"""Tasks API (shared/API.md, "Process tracker") and the health check. Thin: services do the work."""

import uuid

import django_filters
from django.conf import settings
from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from tracker import access, services
from tracker.errors import InvalidBulkRequest, brief
from tracker.models import ProcessTracker, TaskQueue, TaskStatus
from tracker.serializers import QueueSerializer, TaskDetailSerializer, TaskSerializer


class TaskFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=TaskStatus.choices)
    task_type = django_filters.CharFilter()
    queue = django_filters.CharFilter()

    class Meta:
        model = ProcessTracker
        fields = ["status", "task_type", "queue"]


class BulkRequestSerializer(serializers.Serializer):
    """Schema only: the view validates the body itself (tracker.services.task_bulk_clean)."""

    action = serializers.ChoiceField(choices=services.BULK_ACTIONS)
    filter = serializers.DictField(help_text="status, task_type, queue, created_after, created_before")
    dry_run = serializers.BooleanField(required=False, default=False)


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
        """Counts per status and type, oldest due task age, throughput of the last minute and hour (from the
        counters: `?task_type=` and `?queue=` narrow them; `?status=` is ignored)."""
        task_type = request.query_params.get("task_type") or None
        queue = request.query_params.get("queue") or None
        return Response(
            services.task_stats(tenants=access.policy().visible_tenants(request.user), task_type=task_type, queue=queue)
        )

    @extend_schema(request=BulkRequestSerializer, responses={202: dict})
    @action(detail=False, methods=["post"])
    def bulk(self, request):
        """Retry or cancel everything a filter matches, as a job (202 with its id and status URL); the job ends
        with `result = {matched, changed, skipped}`. Limited to the merchants the caller operates. Operators only;
        an empty filter or an unknown field is a 400."""
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise InvalidBulkRequest("The body must be a JSON object.")
        unknown = sorted(set(body) - {"action", "filter", "dry_run"})
        if unknown:
            raise InvalidBulkRequest(
                f"Unknown field(s): {', '.join(unknown)}.", details={f: ["Unknown field."] for f in unknown}
            )
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise InvalidBulkRequest("dry_run must be a boolean.", details={"dry_run": ["Must be a boolean."]})
        services.task_bulk_clean(action=body.get("action"), filter=body.get("filter"))  # 400 before 403
        tenants = access.operable_tenants(request.user)
        if tenants is not None and not tenants:
            raise PermissionDenied("Only operators may run bulk actions.")
        job = import_string(settings.TRACKER["BULK_STARTER"])(
            action=body["action"], filter=body["filter"], dry_run=dry_run, user=request.user
        )
        return Response(
            {"job_id": str(job.pk), "status_url": request.build_absolute_uri(f"/api/jobs/{job.pk}/")}, status=202
        )


class QueueViewSet(viewsets.GenericViewSet):
    """Queues (shared/API.md): every queue that has tasks or is paused; staff pause and resume them."""

    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    serializer_class = QueueSerializer
    queryset = TaskQueue.objects.none()  # for the schema only: queues are listed by tracker.services.queue_list

    @extend_schema(responses=QueueSerializer(many=True))
    def list(self, request):
        rows = services.queue_list(tenants=access.policy().visible_tenants(request.user))
        return self.get_paginated_response(self.paginate_queryset(rows))

    def _set(self, request, name: str, paused: bool) -> Response:
        if not request.user.is_staff:
            raise PermissionDenied("Only staff may pause or resume queues.")
        services.queue_set_paused(name=name, paused=paused, by=request.user)
        row = next((q for q in services.queue_list() if q["name"] == name), None)
        return Response(
            row
            or {
                "name": name,
                "paused": paused,
                "due": 0,
                "running": 0,
                "oldest_due_seconds": 0.0,
                "completed_last_minute": 0,
            }
        )

    @extend_schema(request=None, responses=QueueSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, name=None):
        """Consumers of every cluster stop claiming this queue's tasks within a second (staff only)."""
        return self._set(request, name, True)

    @extend_schema(request=None, responses=QueueSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, name=None):
        """Consumers claim this queue's tasks again (staff only)."""
        return self._set(request, name, False)


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
            database = {"connected": False, **({"error": brief(exc)} if staff else {})}
            return Response({"status": "error", "database": database, "cluster": {}, "timestamp": now}, status=503)
        cluster = cluster_status()
        if not staff:
            cluster["heartbeats"] = [
                {k: v for k, v in beat.items() if k != "worker_id"} for beat in cluster.get("heartbeats", [])
            ]
        return Response({"status": "ok", "database": {"connected": True}, "cluster": cluster, "timestamp": now})
