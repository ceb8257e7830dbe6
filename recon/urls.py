"""API routes of recon (mounted under /api/ by config.urls)."""

urlpatterns = []
