"""API routes of the tracker (mounted under /api/)."""

from django.urls import re_path
from rest_framework.routers import DefaultRouter

from tracker.api import HealthView, QueueViewSet, TaskViewSet

router = DefaultRouter()
router.trailing_slash = "/?"
router.include_root_view = False
router.register("tasks", TaskViewSet, basename="task")
router.register("queues", QueueViewSet, basename="queue")

urlpatterns = [re_path(r"^health/?$", HealthView.as_view(), name="health"), *router.urls]
