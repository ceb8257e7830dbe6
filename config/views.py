"""Project-level error views and middleware: one JSON error shape for everything under /api/ (shared/API.md,
"Errors"), whatever fails (unknown paths, 500s, bad Host headers, over-large bodies, CSRF), and Django's own
pages elsewhere (the console). Never a debug page under /api/."""

from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.views import csrf, defaults

from config.limits import body_limit
from config.textcheck import text_problem


def is_api(request) -> bool:
    return request.path_info.startswith("/api/") or request.path_info == "/api"


def api_error(message: str, code: str, status: int, details: dict | None = None) -> JsonResponse:
    return JsonResponse({"error": message, "code": code, "details": details or {}}, status=status)


def bad_request(request, exception=None, template_name="400.html"):
    if isinstance(exception, RequestDataTooBig):
        limit = body_limit(request.path_info)
        if is_api(request):
            return api_error(f"The request body is larger than the limit of {limit} bytes.", "payload_too_large",
                             413, {"max_bytes": limit})
    if is_api(request):
        return api_error("Bad request.", "bad_request", 400)
    return defaults.bad_request(request, exception, template_name)


def permission_denied(request, exception=None, template_name="403.html"):
    if is_api(request):
        return api_error("You do not have permission to perform this action.", "permission_denied", 403)
    return defaults.permission_denied(request, exception, template_name)


def page_not_found(request, exception=None, template_name="404.html"):
    if is_api(request):
        return api_error("Not found.", "not_found", 404)
    return defaults.page_not_found(request, exception, template_name)


def api_not_found(request, *args, **kwargs):
    return api_error("Not found.", "not_found", 404)


def server_error(request, template_name="500.html"):
    if is_api(request):
        return api_error("Internal server error.", "server_error", 500)
    return defaults.server_error(request, template_name)


def csrf_failure(request, reason=""):
    if is_api(request):
        return api_error(f"CSRF check failed: {reason}", "permission_denied", 403)
    return csrf.csrf_failure(request, reason)


class RefuseUnstorableTextMiddleware:
    """400 for a path or query string holding text PostgreSQL cannot store (NUL, lone surrogates), before any
    view turns it into a query (psycopg refuses NUL in a parameter with an error that would be a 500)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        problem = text_problem(request.path_info)
        where = "path"
        if problem is None:
            for key, values in request.GET.lists():
                for text in (key, *values):
                    if (problem := text_problem(text)) is not None:
                        where = f"query parameter {key.encode('unicode_escape').decode()[:80]!r}"
                        break
                if problem:
                    break
        if problem is None:
            return self.get_response(request)
        if is_api(request):
            return api_error(f"The {where} {problem}.", "validation_error", 400)
        return defaults.bad_request(request, None)
