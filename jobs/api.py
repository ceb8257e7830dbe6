"""Jobs API (shared/API.md, "Jobs"). Thin: services do the work; merchant scoping goes through the access
policy named by settings.TENANT_ACCESS. Unknown ids and other merchants' jobs are 404, checked before the
operator check (403)."""

import uuid
from importlib import import_module

import django_filters
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.db.models import Q
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from jobs import events, services
from jobs.models import Job, JobState
from jobs.serializers import JobCreateSerializer, JobRetrySerializer, JobSerializer, JobSignalSerializer


def policy():
    return import_module(settings.TENANT_ACCESS)


def visible_jobs(user, queryset=None):
    """Jobs `user` may see: every job for staff; else the jobs of their merchants and their own personal jobs."""
    queryset = Job.objects.all() if queryset is None else queryset
    tenants = policy().visible_tenants(user)
    if tenants is None:
        return queryset
    return queryset.filter(Q(merchant_id__in=tenants) | Q(merchant_id="", owner_id=user.pk))


def can_change(user, job: Job) -> bool:
    """Operators of the job's merchant (and staff); for a personal job, its owner too."""
    if not job.merchant_id and job.owner_id and job.owner_id == user.pk:
        return True
    return bool(policy().can_operate(user, job.merchant_id))


class EventStreamRenderer(BaseRenderer):
    """Lets clients that send `Accept: text/event-stream` (EventSource) reach the stream; errors are JSON."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return JSONRenderer().render(data)


class JobFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=JobState.choices)
    job_type = django_filters.CharFilter()

    class Meta:
        model = Job
        fields = ["state", "job_type"]


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = JobSerializer
    filterset_class = JobFilter
    lookup_field = "job_id"
    lookup_value_regex = "[^/]+"

    def get_queryset(self):
        return visible_jobs(self.request.user, Job.objects.order_by("-created_at", "job_id")).prefetch_related(
            "workflow_steps")

    def get_object(self) -> Job:
        try:
            job_id = uuid.UUID(str(self.kwargs["job_id"]))
        except ValueError:
            raise NotFound("Job not found.") from None
        job = self.get_queryset().filter(job_id=job_id).first()
        if job is None:
            raise NotFound("Job not found.")
        return job

    @extend_schema(request=JobCreateSerializer, responses={201: JobSerializer, 200: JobSerializer})
    def create(self, request):
        """Creates a job of a registered type; unknown type or invalid params -> 400. A repeated
        `idempotency_key` (same user, same body) answers 200 with the existing job; another body -> 409."""
        body = JobCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        merchant_id = body.validated_data["merchant_id"]
        if merchant_id:
            tenants = policy().visible_tenants(request.user)
            if tenants is not None and merchant_id not in tenants:
                raise NotFound("Merchant not found.")
            if not policy().can_operate(request.user, merchant_id):
                raise PermissionDenied("Only operators may start jobs for this merchant.")
        job = services.job_create(job_type=body.validated_data["job_type"], params=body.validated_data["params"],
                                  owner=request.user, merchant_id=merchant_id,
                                  idempotency_key=body.validated_data["idempotency_key"])
        return Response(JobSerializer(Job.objects.get(pk=job.pk)).data,
                        status=status.HTTP_200_OK if job.replayed else status.HTTP_201_CREATED)

    def _operate(self, service, **kwargs) -> Response:
        job = self.get_object()
        if not can_change(self.request.user, job):
            raise PermissionDenied("Only operators may change this job.")
        service(job_id=job.job_id, by=self.request.user, **kwargs)
        return Response(JobSerializer(Job.objects.get(pk=job.job_id)).data)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, job_id=None):
        """CREATED, RUNNING, WAITING or PAUSED -> CANCELLED; 409 otherwise. Operators only."""
        return self._operate(services.job_cancel)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, job_id=None):
        """RUNNING -> PAUSED (the running slice stops at its next check); 409 otherwise. Operators only."""
        return self._operate(services.job_pause)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, job_id=None):
        """PAUSED -> RUNNING, continuing from the last checkpoint; 409 otherwise. Operators only."""
        return self._operate(services.job_resume)

    @extend_schema(request=JobRetrySerializer, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, job_id=None):
        """FAILED -> CREATED and a new run from the last checkpoint (or from the start with
        `{"from_start": true}`); 409 otherwise. Operators only."""
        self.get_object()  # 404 before a bad body is reported
        body = JobRetrySerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        return self._operate(services.job_retry, from_start=body.validated_data["from_start"])

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"], url_path=r"steps/(?P<step_name>[^/]+)/retry")
    def step_retry(self, request, job_id=None, step_name=None):
        """Runs a step of a FAILED workflow run and everything downstream of it again; 409 unless the run is
        FAILED and the step's parents are COMPLETED or SKIPPED; 404 for an unknown step. Operators only."""
        from jobs.workflows import engine

        return self._operate(engine.workflow_step_retry, name=step_name)

    @extend_schema(request=JobSignalSerializer, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def signal(self, request, job_id=None):
        """Stores a named signal (e.g. `approve`, `reject`) and wakes the job if it waits for it. A signal
        sent before the job waits for it is delivered when it does. Finished job -> 409. Operators only."""
        job = self.get_object()
        if not can_change(request.user, job):
            raise PermissionDenied("Only operators may change this job.")
        body = JobSignalSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.job_signal(job_id=job.job_id, name=body.validated_data["name"],
                            payload=body.validated_data["payload"], by=request.user)
        return Response(JobSerializer(Job.objects.get(pk=job.job_id)).data)

    @extend_schema(
        parameters=[OpenApiParameter("last_event_id", int, description="Replay every stored event after this id "
                                     "(the `Last-Event-ID` header wins when both are sent).")],
        responses={(200, "text/event-stream"): OpenApiResponse(
            OpenApiTypes.STR, description="Server-Sent Events: `state`, `progress`, `log`, each stored one with its "
                                          "`id:`."),
                   429: OpenApiResponse(description="Too many open streams for this user.")})
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, EventStreamRenderer])
    def events(self, request, job_id=None):
        """Server-Sent Events of the job. With `Last-Event-ID` (or `?last_event_id=`): every stored event after
        that id, in order, then the live ones; without: its current `state` at once, then every new event.
        `: keep-alive` comments while idle; closes after a terminal state. A user holds at most
        JOBS["STREAMS_PER_USER"] open streams per server process (429 beyond). The stream holds no database
        connection: the request's own is closed before streaming starts."""
        job = self.get_object()
        last_event_id = events.parse_last_event_id(
            request.headers.get("Last-Event-ID") or request.query_params.get("last_event_id"))
        user_key = request.user.pk
        release = events.hub.acquire_slot(user_key)
        if not connection.in_atomic_block:
            connection.close()  # nothing below needs it; a stream may stay open for hours
        stream = events.astream if isinstance(request._request, ASGIRequest) else events.stream
        response = StreamingHttpResponse(stream(job.job_id, last_event_id=last_event_id, user_key=user_key),
                                         content_type="text/event-stream")
        response._resource_closers.append(release)  # the slot comes back when the response is closed
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
