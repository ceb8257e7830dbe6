"""Project-wide API plumbing: error shape, pagination, throttling, Decimal-safe JSON parsing (the schema's
side of the error shape is config.schema)."""

import decimal
import json

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, ValidationError as DjangoValidationError
from django.http import Http404
from django_fsm import TransitionNotAllowed
from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

from config.errors import AppError
from config.textcheck import MAX_JSON_DEPTH, json_problem


class Pagination(PageNumberPagination):
    """DRF page-number pagination; `page_size` that is not a positive integer is a 400 (not silently the
    default), above the maximum it is the maximum."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw not in (None, "") and not (raw.isascii() and raw.isdigit() and int(raw) > 0):
            raise exceptions.ValidationError({self.page_size_query_param: ["A positive integer is required."]})
        return super().get_page_size(request)


class WriteThrottle(UserRateThrottle):
    """Throttles writes only (reads are never throttled by default)."""

    scope = "writes"

    def allow_request(self, request, view):
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        return super().allow_request(request, view)


class DecimalJSONParser(JSONParser):
    """Parses JSON numbers as Decimal, never through binary floats."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.loads(stream.read().decode(encoding), parse_float=decimal.Decimal)
        except (ValueError, UnicodeDecodeError) as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            raise exceptions.ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.") from None
        if (problem := json_problem(data)) is not None:
            raise exceptions.ParseError(f"JSON parse error - {problem}.")
        return data


_CODES = {
    400: "validation_error",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "throttled",
}


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            msg = _first_message(value)
            return msg if key in ("detail", "non_field_errors") else f"{key}: {msg}"
        return "Invalid input."
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid input."
    return str(detail)


def error_response(message: str, code: str, http_status: int, details: dict | None = None) -> Response:
    return Response({"error": message, "code": code, "details": details or {}}, status=http_status)


def exception_handler(exc, context):
    """Maps every error to {"error", "code", "details"} (shared/API.md, "Errors")."""
    if isinstance(exc, AppError):
        return error_response(exc.message, exc.code, exc.status, exc.details)
    if isinstance(exc, RequestDataTooBig):
        from config.limits import body_limit

        limit = body_limit(context["request"].path_info) if context.get("request") else None
        return error_response(f"The request body is larger than the limit of {limit} bytes.", "payload_too_large",
                              413, {"max_bytes": limit})
    if isinstance(exc, TransitionNotAllowed):
        return error_response(str(exc) or "Illegal state transition.", "illegal_transition", 409)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        details = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        message = _first_message(detail)
    else:
        details = {}
        message = _first_message(detail)
    code = getattr(exc, "default_code", None) if response.status_code not in _CODES else _CODES[response.status_code]
    if isinstance(exc, exceptions.ValidationError):
        code = "validation_error"
    response.data = {"error": message, "code": code or "error", "details": details}
    return response

