from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import dashboard
from config.metrics import MetricsView

admin.site.index_template = "admin/dashboard.html"


def dashboard_index(request):
    """The admin's first page: the dashboard (config.dashboard) above the usual list of models."""
    return admin.site.index(request, extra_context=dashboard.panel_context(request))


urlpatterns = [
    path("admin/", admin.site.admin_view(dashboard_index)),
    path("admin/dashboard/panel/", admin.site.admin_view(dashboard.panel_view), name="dashboard-panel"),
    path("admin/", admin.site.urls),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path("metrics/", MetricsView.as_view()),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/schema", SpectacularAPIView.as_view()),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema")),
    path("api/", include("tracker.urls")),
    path("api/", include("recon.urls")),
    path("api/", include("jobs.urls")),
]
