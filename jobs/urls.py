"""API routes of jobs (mounted under /api/ by config.urls)."""

urlpatterns = []
