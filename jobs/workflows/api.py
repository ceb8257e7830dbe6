"""Workflows API (shared/API.md, "Workflows (DAG jobs)"): the declared workflows and the runs' analytics. Runs
themselves are jobs (jobs.api)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from jobs.api import visible_jobs
from jobs.serializers import WorkflowSerializer, WorkflowStatsQuerySerializer
from jobs.workflows import declare, selectors


class WorkflowViewSet(viewsets.GenericViewSet):
    serializer_class = WorkflowSerializer
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    filter_backends = []

    def get_queryset(self):
        return declare.all_workflows()

    def list(self, request):
        """Declared workflows (their latest versions) with their steps."""
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(WorkflowSerializer(page, many=True).data)

    def retrieve(self, request, name=None):
        """One declared workflow; unknown -> 404."""
        wf = next((w for w in self.get_queryset() if w.name == name), None)
        if wf is None:
            raise NotFound("Workflow not found.")
        return Response(WorkflowSerializer(wf).data)

    @extend_schema(
        parameters=[OpenApiParameter("since", str), OpenApiParameter("workflow", str)],
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(detail=False, methods=["get"])
    def stats(self, request):
        """Runs and steps by state, steps retrying and exhausted, the ten slowest steps (p50/p95/max) since
        `since` (default 24 h ago), scoped to the caller's merchants."""
        query = WorkflowStatsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(
            selectors.workflow_stats(
                jobs=visible_jobs(request.user),
                since=query.validated_data.get("since"),
                workflow=query.validated_data.get("workflow"),
            )
        )
