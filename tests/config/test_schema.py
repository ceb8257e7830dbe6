"""The OpenAPI schema tells the truth (issue 17, item 11): lists are paginated lists, every operation documents
its error statuses with the error shape, PATCH of an account needs no field."""

import pytest
from django.urls import get_resolver
from drf_spectacular.generators import SchemaGenerator

from recon.models import Account

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


def test_every_list_endpoint_is_a_paginated_list(schema):
    lists = []
    for path, ops in schema["paths"].items():
        get = ops.get("get")
        if get is None or "{" in path.rsplit("/", 2)[-2] or path.endswith(("/balances/", "/events/", "/health/",
                                                                               "/stats/", "/summary/")):
            continue
        ref = get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        lists.append(path)
        assert ref.split("/")[-1].startswith("Paginated"), path
        props = schema["components"]["schemas"][ref.split("/")[-1]]["properties"]
        assert {"count", "next", "previous", "results"} <= set(props), path
    assert len(lists) >= 9
    assert {"/api/accounts/{account_id}/staging-entries/", "/api/accounts/{account_id}/entries/",
            "/api/merchants/{merchant_id}/transactions/"} <= set(lists)


def test_every_operation_documents_its_error_statuses(schema):
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            assert {"400", "401", "403", "404"} <= codes, (method, path)
            if method in ("post", "put", "patch", "delete"):
                assert {"409", "413", "415", "429"} <= codes, (method, path)
            for code in codes - {"200", "201", "202", "204", "503"}:
                if "content" not in op["responses"][code]:
                    continue  # a view's own description of the status, without a body
                ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/Error"), (method, path, code)


def test_patch_of_an_account_needs_no_account_name(schema, operator_api, ledger):
    patched = schema["paths"]["/api/merchants/{merchant_id}/accounts/{account_id}/"]["patch"]
    ref = patched["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert "required" not in schema["components"]["schemas"][ref]
    path = f"/api/merchants/{ledger.merchant.pk}/accounts/{ledger.payments.pk}/"
    resp = operator_api.patch(path, {}, format="json")
    assert resp.status_code == 200 and resp.json()["account_name"] == "payments"
    assert operator_api.patch(path, {"account_name": "renamed"}, format="json").json()["account_name"] == "renamed"
    assert operator_api.put(path, {}, format="json").status_code == 400
    assert Account.objects.get(pk=ledger.payments.pk).account_name == "renamed"


def test_schema_and_resolver_agree(schema):
    """Every API route is in the schema (the permission matrix walks the resolver; this keeps both in step)."""
    from tests.reliability.endpoints import api_routes

    documented = {p.rstrip("/") for p in schema["paths"]}
    for route in api_routes(get_resolver()):
        if route.startswith(("/api/schema", "/api/docs")):
            continue
        assert route.rstrip("/") in documented, route
