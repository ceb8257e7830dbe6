"""API routes of tracker."""

urlpatterns = []
