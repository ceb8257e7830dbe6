from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from config import views

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
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/docs", SpectacularSwaggerSplitView.as_view(url_name="schema")),
    path("api/", include("tracker.urls")),
    path("api/", include("recon.urls")),
    path("api/", include("jobs.urls")),
    # Anything else under /api/ is a JSON 404, in DEBUG too (config.views).
    re_path(r"^api(?:/.*)?$", views.api_not_found),
]

handler400 = "config.views.bad_request"
handler403 = "config.views.permission_denied"
handler404 = "config.views.page_not_found"
handler500 = "config.views.server_error"
