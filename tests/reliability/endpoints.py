"""Every API endpoint, read from Django's URL resolver (so a new endpoint is covered without editing a list):
its path template ("/api/accounts/{account_id}/balances/") and the HTTP methods its view answers."""

import re

from django.urls import URLPattern, URLResolver

_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
_PATH_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")


def _template(parts: list[str]) -> str:
    text = ""
    for part in parts:
        part = part.lstrip("^").rstrip("$").replace("\\Z", "")
        part = _GROUP.sub(lambda m: "{" + m.group(1) + "}", part)
        part = _PATH_CONVERTER.sub(lambda m: "{" + m.group(1) + "}", part)
        text += part.replace("/?", "/").replace("\\.", ".")
    return "/" + text


def _walk(patterns, prefix: list[str]):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, [*prefix, str(entry.pattern)])
        elif isinstance(entry, URLPattern):
            yield [*prefix, str(entry.pattern)], entry.callback


def api_routes(resolver) -> dict[str, set[str]]:
    """{path template: methods} of every route under /api/ (not the catch-all 404 nor format suffixes)."""
    routes: dict[str, set[str]] = {}
    for parts, callback in _walk(resolver.url_patterns, []):
        path = _template(parts)
        if not path.startswith("/api/") or "(" in path or "{format}" in path or ".*" in path:
            continue
        path = path if path.endswith("/") else path + "/"
        view = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        actions = getattr(callback, "actions", None)
        if actions:
            methods = {m.upper() for m in actions}
        elif view is not None:
            methods = {m.upper() for m in getattr(view, "http_method_names", []) if hasattr(view, m)} - {"OPTIONS",
                                                                                                           "HEAD"}
        else:
            methods = {"GET"}
        routes.setdefault(path, set()).update(methods)
    return routes
