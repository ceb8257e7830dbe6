"""API routes of jobs (mounted under /api/ by config.urls); every path with and without a trailing slash."""

from rest_framework.routers import DefaultRouter

from jobs.api import JobViewSet
from jobs.workflows.api import WorkflowViewSet

router = DefaultRouter()
router.trailing_slash = "/?"
router.include_root_view = False
router.register("jobs", JobViewSet, basename="job")
router.register("workflows", WorkflowViewSet, basename="workflow")

urlpatterns = router.urls
