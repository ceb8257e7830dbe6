"""Permission matrix over every API endpoint, read from the URL resolver (issue 17, reliability suite): staff,
an operator and a viewer of the merchant, another merchant's operator, and no credentials, each calling every
method of every route on the merchant's objects. Asserts: no 5xx; another merchant's user gets 404 for every
object of the merchant (as for an unknown id) and never sees its ids in any answer; viewers get 403 on every
change; operators are refused only what is staff's; anonymous callers get 401 except on the health check."""

import json

import pytest
from django.urls import get_resolver

from tests.conftest import client_for
from tests.reliability.endpoints import api_routes
from tests.reliability.world import World

pytestmark = pytest.mark.django_db(transaction=True)

PUBLIC = {"/api/health/"}
SKIP = {"/api/docs/"}  # HTML (Swagger UI); its schema is /api/schema/
STAFF_ONLY = {
    ("POST", "/api/merchants/"),
    ("POST", "/api/recon-engine/trigger/"),
    ("POST", "/api/merchants/{merchant_id}/periods/{period_id}/reopen/"),
}
# Staff only and naming no merchant's object: every other user is refused (403), whoever they are.
GLOBAL_STAFF_ONLY = {("POST", "/api/queues/{name}/pause/"), ("POST", "/api/queues/{name}/resume/")}
# Readable by every user and naming no merchant's object (declared workflows are code, not data).
GLOBAL_READ = {("GET", "/api/workflows/{name}/")}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
ORDER = ["GET", "POST", "PUT", "PATCH", "DELETE"]
ROLES = ("anonymous", "stranger", "viewer", "operator", "staff")


def _call(client, method: str, path: str):
    resp = client.generic(
        method,
        path,
        json.dumps({}) if method in UNSAFE else "",
        content_type="application/json",
        HTTP_ACCEPT="application/json",
    )
    if getattr(resp, "streaming", False):
        body = b"".join(resp.streaming_content) if "events" not in path else b""
        resp.close()
    else:
        body = resp.content
    return resp.status_code, body.decode("utf-8", "replace")


def _expected(role: str, method: str, template: str) -> set[int] | None:
    """The statuses allowed for this cell, or None for "any non-refusal" (not 401, 403 nor 404)."""
    if template in PUBLIC:
        return {200}
    if role == "anonymous":
        return {401}
    if (method, template) in GLOBAL_STAFF_ONLY:
        return None if role == "staff" else {403}
    if (method, template) in GLOBAL_READ:
        return None
    names_object = "{" in template
    if role == "stranger":
        if names_object:
            return {404}
        if (method, template) in STAFF_ONLY:
            return {403}
        return None
    if (method, template) in STAFF_ONLY and role != "staff":
        return {403}
    if role == "viewer" and method in UNSAFE:
        return {403} if names_object or template == "/api/merchants/" else None
    return None


def test_permission_matrix_over_every_endpoint():
    routes = {path: methods for path, methods in api_routes(get_resolver()).items() if path not in SKIP}
    cells = failures = 0
    problems = []
    counts: dict[int, int] = {}
    for role in ROLES:
        world = World(role)
        user = {
            "anonymous": None,
            "stranger": world.stranger,
            "viewer": world.viewer,
            "operator": world.operator,
            "staff": world.staff,
        }[role]
        client = client_for(user)
        for template, methods in sorted(routes.items()):
            for method in sorted(
                (m for m in methods if m in ORDER), key=ORDER.index
            ):  # DELETE last: it may remove the object
                status, body = _call(client, method, world.path(template))
                cells += 1
                counts[status] = counts.get(status, 0) + 1
                expected = _expected(role, method, template)
                bad = status >= 500
                if expected is None:
                    bad = bad or status in (401, 403, 404)
                else:
                    bad = bad or status not in expected
                if role == "stranger":
                    leaked = [s for s in world.secrets if s in body and s not in world.path(template)]
                    bad = bad or bool(leaked)
                    # Another merchant's object answers exactly as an unknown id does.
                    if "{" in template and status == 404:
                        unknown = _call(client, method, world.unknown_path(template))
                        bad = bad or unknown[0] != 404 or json.loads(unknown[1])["code"] != json.loads(body)["code"]
                if status >= 400 and template not in PUBLIC:
                    shape = json.loads(body) if body.startswith("{") else {}
                    bad = bad or set(shape) != {"error", "code", "details"}
                if bad:
                    failures += 1
                    problems.append(
                        f"{role} {method} {template}: {status} (expected {expected or 'allowed'}) {body[:160]}"
                    )
    print(
        f"\npermission matrix: {len(routes)} routes, {cells} cells, {len(ROLES)} roles, statuses {counts}, "
        f"failures {failures}"
    )
    assert not problems, "\n".join(problems)
    assert cells >= 5 * 40
