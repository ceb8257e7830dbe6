"""The OpenAPI schema's side of the error shape: every operation documents the error statuses it can answer
(shared/API.md, "Errors"). Kept apart from config.api, which DRF's settings import while drf-spectacular's
AutoSchema is itself being imported."""

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """The error shape of every API answer that is not a success (shared/API.md, "Errors")."""

    error = serializers.CharField()
    code = serializers.CharField()
    details = serializers.DictField()


_ERRORS = {
    400: "Invalid input (code `validation_error`, `parse_error` or a more specific one).",
    401: "No or bad credentials.",
    403: "Authenticated but not allowed (e.g. not an operator of the merchant).",
    404: "Unknown, or belongs to another merchant.",
    405: "Method not allowed.",
    406: "Not acceptable.",
    409: "Illegal state transition or conflict.",
    413: "Request body above the limit (code `payload_too_large`).",
    415: "Unsupported media type.",
    429: "Throttled, or a per-user limit reached (code `throttled`).",
}
_READ_ERRORS = (400, 401, 403, 404, 405, 406)


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's schema with the error statuses every operation can answer, each with the error shape
    (a view's own description of a status wins)."""

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        ref = self.resolve_serializer(ErrorSerializer, "response").ref
        codes = _READ_ERRORS if method in ("GET", "HEAD", "OPTIONS") else tuple(_ERRORS)
        responses = operation.setdefault("responses", {})
        for code in codes:
            responses.setdefault(str(code), {"content": {"application/json": {"schema": ref}},
                                             "description": _ERRORS[code]})
        return operation
