"""Tasks API and health check (shared/API.md, "Process tracker", "Health")."""

import pytest

from tracker import services
from tracker.models import ProcessTracker
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def tasks():
    done = services.task_create(task_type="test.noop", payload={"order_id": "A-1"}, tenant="m1")
    failed = services.task_create(task_type="test.permanent", payload={}, tenant="m2")
    Worker("w").drain(budget_seconds=5)
    pending = services.task_create(task_type="test.noop", payload={}, tenant="m1")
    return {"done": done, "failed": failed, "pending": pending}


def test_health_is_public_and_reports_database_and_cluster(anon_api):
    body = anon_api.get("/api/health").json()
    assert body["status"] == "ok" and body["database"]["connected"] is True
    assert {"consumers_alive", "queue_lag_seconds", "heartbeats"} <= set(body["cluster"])
    assert "timestamp" in body


def test_tasks_need_authentication(anon_api):
    response = anon_api.get("/api/tasks/")
    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"


def test_list_filters_and_paginates(staff_api, tasks):
    body = staff_api.get("/api/tasks/").json()
    assert body["count"] == 3 and set(body) == {"count", "next", "previous", "results"}
    assert staff_api.get("/api/tasks?status=FAILED").json()["count"] == 1
    assert staff_api.get("/api/tasks/?task_type=test.noop&status=COMPLETED").json()["count"] == 1
    assert staff_api.get("/api/tasks/?queue=nope").json()["count"] == 0
    page = staff_api.get("/api/tasks/?page_size=2").json()
    assert len(page["results"]) == 2 and page["next"]
    bad = staff_api.get("/api/tasks/?status=DONE")
    assert bad.status_code == 400 and bad.json()["code"] == "validation_error"


def test_detail_has_error_details_and_transitions(staff_api, tasks):
    failed = tasks["failed"]
    body = staff_api.get(f"/api/tasks/{failed.task_id}").json()
    assert body["status"] == "FAILED" and "Traceback" in body["error_details"]
    assert [(t["from_status"], t["to_status"]) for t in body["transitions"]] == [
        ("PENDING", "PROCESSING"),
        ("PROCESSING", "FAILED"),
    ]
    assert body["transitions"][0]["by"] == "w"
    listed = staff_api.get("/api/tasks/").json()["results"][0]
    assert "transitions" not in listed and "error_details" not in listed


@pytest.mark.parametrize("task_id", ["nope", "00000000-0000-0000-0000-000000000000", "123"])
def test_unknown_task_ids_are_404(staff_api, task_id):
    for method, path in [
        ("get", f"/api/tasks/{task_id}/"),
        ("post", f"/api/tasks/{task_id}/retry/"),
        ("post", f"/api/tasks/{task_id}/cancel"),
    ]:
        response = getattr(staff_api, method)(path)
        assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_retry_and_cancel_with_409_for_illegal_states(staff_api, tasks):
    failed, pending, done = tasks["failed"], tasks["pending"], tasks["done"]
    response = staff_api.post(f"/api/tasks/{failed.task_id}/retry/")
    assert response.status_code == 200 and response.json()["status"] == "PENDING"
    assert response.json()["attempts"] == 0
    assert response.json()["transitions"][-1]["by"] == "staff"
    assert staff_api.post(f"/api/tasks/{pending.task_id}/cancel").json()["status"] == "CANCELLED"
    conflict = staff_api.post(f"/api/tasks/{done.task_id}/cancel/")
    assert conflict.status_code == 409 and conflict.json()["code"] == "illegal_transition"
    assert staff_api.post(f"/api/tasks/{done.task_id}/retry/").status_code == 409
    assert ProcessTracker.objects.get(pk=done.pk).status == "COMPLETED"


def test_users_without_merchants_see_no_tasks(plain_api, tasks):
    assert plain_api.get("/api/tasks/").json()["count"] == 0
    assert plain_api.get(f"/api/tasks/{tasks['failed'].task_id}/").status_code == 404
    assert plain_api.post(f"/api/tasks/{tasks['failed'].task_id}/retry/").status_code == 404
    assert ProcessTracker.objects.get(pk=tasks["failed"].pk).status == "FAILED"


def test_stats(staff_api, tasks):
    body = staff_api.get("/api/tasks/stats/").json()
    assert body["by_status"]["COMPLETED"] == 1 and body["by_status"]["FAILED"] == 1
    assert body["by_type"]["test.noop"] == {"COMPLETED": 1, "PENDING": 1}
    assert body["throughput"]["last_minute"] == 1


def test_schema_and_docs_are_served(staff_api):
    assert staff_api.get("/api/schema/").status_code == 200
    docs = staff_api.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content and b"cdn" not in docs.content.lower()


def test_merchant_users_see_their_tasks_and_only_operators_change_them(django_user_model, tasks):
    from tests.conftest import client_for
    from tests.recon.factories import MembershipFactory, MerchantFactory

    m1, m2 = MerchantFactory(merchant_id="m1"), MerchantFactory(merchant_id="m2")
    viewer = django_user_model.objects.create_user("viewer")
    operator = django_user_model.objects.create_user("operator")
    MembershipFactory(user=viewer, merchant=m2, role="viewer")
    MembershipFactory(user=operator, merchant=m2, role="operator")
    MembershipFactory(user=operator, merchant=m1, role="viewer")
    failed, pending = tasks["failed"], tasks["pending"]  # tenants m2 and m1
    viewer_api, operator_api = client_for(viewer), client_for(operator)
    assert [t["task_id"] for t in viewer_api.get("/api/tasks/").json()["results"]] == [str(failed.task_id)]
    assert viewer_api.get(f"/api/tasks/{pending.task_id}/").status_code == 404
    denied = viewer_api.post(f"/api/tasks/{failed.task_id}/retry/")
    assert denied.status_code == 403 and denied.json()["code"] == "permission_denied"
    assert operator_api.post(f"/api/tasks/{pending.task_id}/cancel/").status_code == 403  # viewer of m1
    assert ProcessTracker.objects.get(pk=pending.pk).status == "PENDING"
    assert operator_api.post(f"/api/tasks/{failed.task_id}/retry/").status_code == 200
    assert operator_api.get("/api/tasks/stats/").json()["by_status"]["PENDING"] == 2
