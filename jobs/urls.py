"""API routes of jobs (mounted under /api/ by config.urls); every path with and without a trailing slash."""

from rest_framework.routers import DefaultRouter

from jobs.api import JobViewSet

router = DefaultRouter()
router.trailing_slash = "/?"
router.include_root_view = False
router.register("jobs", JobViewSet, basename="job")

urlpatterns = router.urls
