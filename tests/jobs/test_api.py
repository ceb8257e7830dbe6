"""The jobs API (shared/API.md, "Jobs")."""

import pytest
from django.contrib.auth import get_user_model

from jobs import services
from jobs.models import Job
from jobs.registry import job_type, register
from tests.conftest import client_for
from tests.jobs.conftest import drain, reload


@job_type("tests.noop")
def noop(ctx, params):
    """A job type that is not a demo type: anyone may start it (personal) or an operator (merchant)."""
    return {"ok": True}


register(noop)


pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = {
    "job_id",
    "job_type",
    "params",
    "state",
    "progress",
    "step",
    "checkpoint",
    "result",
    "error",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "heartbeat_at",
    "schema_version",
    "workflow",
    "steps",
}


def user(name, **extra):
    return get_user_model().objects.create_user(name, password="pw", **extra)


def test_create_job_returns_201_with_the_documented_fields(staff_api):
    resp = staff_api.post(
        "/api/jobs/", {"job_type": "jobs.countdown", "params": {"steps": 2, "step_seconds": 0}}, format="json"
    )
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert set(body) == FIELDS
    assert body["state"] == "CREATED" and body["progress"] == 0
    assert body["params"] == {"steps": 2, "step_seconds": 0.0, "fail_at": None, "fail_attempts": 1}
    drain()
    detail = staff_api.get(f"/api/jobs/{body['job_id']}").json()
    assert detail["state"] == "COMPLETED" and detail["result"] == {"steps": 2} and detail["progress"] == 100


@pytest.mark.parametrize(
    "body, field",
    [
        ({"job_type": "nope.nothing", "params": {}}, "job_type"),
        ({"job_type": "jobs.countdown", "params": {"steps": 0}}, "params"),
        ({"job_type": "jobs.countdown", "params": {"steps": "many"}}, "params"),
        ({"job_type": "jobs.countdown", "params": [1, 2]}, "params"),
        ({"params": {}}, "job_type"),
    ],
)
def test_bad_type_or_params_are_400_with_details(staff_api, body, field):
    resp = staff_api.post("/api/jobs/", body, format="json")
    assert resp.status_code == 400
    data = resp.json()
    assert data["code"] in ("validation_error", "unknown_job_type") and data["error"]
    assert field in data["details"]
    assert Job.objects.count() == 0


def test_list_filters_by_state_and_type_and_paginates(staff_api):
    a = services.job_create(job_type="jobs.countdown", params={"steps": 1, "step_seconds": 0})
    services.job_create(job_type="jobs.approval_demo", params={})
    services.job_cancel(job_id=a.pk, by=None)
    data = staff_api.get("/api/jobs/").json()
    assert data["count"] == 2 and set(data) == {"count", "next", "previous", "results"}
    assert [j["job_id"] for j in staff_api.get("/api/jobs?state=CANCELLED").json()["results"]] == [str(a.pk)]
    assert staff_api.get("/api/jobs/?job_type=jobs.approval_demo").json()["count"] == 1
    assert staff_api.get("/api/jobs/?state=BOGUS").status_code == 400
    assert staff_api.get("/api/jobs/?page_size=1").json()["next"]


def test_actions_answer_200_or_409_and_record_the_user(staff_api, staff_user):
    job = services.job_create(job_type="jobs.approval_demo", params={})
    url = f"/api/jobs/{job.pk}"
    assert staff_api.post(f"{url}/pause/").status_code == 409
    assert staff_api.post(f"{url}/resume").status_code == 409
    resp = staff_api.post(f"{url}/retry/")
    assert resp.status_code == 409 and resp.json()["code"] == "illegal_transition"
    drain()
    assert reload(job).state == "WAITING"
    assert staff_api.post(f"{url}/pause/").status_code == 409  # WAITING cannot pause
    resp = staff_api.post(f"{url}/signal/", {"name": "approve", "payload": {"by": "api"}}, format="json")
    assert resp.status_code == 200 and resp.json()["state"] == "RUNNING"
    drain()
    assert reload(job).result == {"decision": "approve", "payload": {"by": "api"}}
    assert staff_api.post(f"{url}/signal/", {"name": "approve"}, format="json").status_code == 409
    assert staff_api.post(f"{url}/cancel/").status_code == 409

    other = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    resp = staff_api.post(f"/api/jobs/{other.pk}/cancel")
    assert resp.status_code == 200 and resp.json()["state"] == "CANCELLED"
    from tracker.audit import history

    last = history(other)[-1]
    assert (last.from_status, last.to_status, last.by_user_id) == ("CREATED", "CANCELLED", staff_user.pk)


def test_decimal_numbers_in_params_and_payloads_are_accepted(staff_api):
    """Request numbers are parsed as Decimal (config.api.DecimalJSONParser)."""
    resp = staff_api.post(
        "/api/jobs/", {"job_type": "jobs.countdown", "params": {"steps": 1, "step_seconds": 0.01}}, format="json"
    )
    assert resp.status_code == 201, resp.json()
    assert resp.json()["params"]["step_seconds"] == 0.01
    job = services.job_create(job_type="jobs.approval_demo", params={})
    resp = staff_api.post(
        f"/api/jobs/{job.pk}/signal/", {"name": "approve", "payload": {"amount": 10.25}}, format="json"
    )
    assert resp.status_code == 200, resp.json()
    drain()
    assert reload(job).result["payload"] == {"amount": "10.25"}  # decimals are stored as strings


def test_signal_needs_a_name(staff_api):
    job = services.job_create(job_type="jobs.approval_demo", params={})
    resp = staff_api.post(f"/api/jobs/{job.pk}/signal/", {"payload": {}}, format="json")
    assert resp.status_code == 400 and "name" in resp.json()["details"]


def test_retry_of_a_failed_job_via_api(staff_api):
    job = services.job_create(job_type="jobs.countdown", params={"steps": 2, "step_seconds": 0, "fail_at": 1})
    drain()
    assert reload(job).state == "FAILED"
    resp = staff_api.post(f"/api/jobs/{job.pk}/retry/", {"from_start": True}, format="json")
    assert resp.status_code == 200 and resp.json()["state"] == "CREATED"
    drain()
    assert reload(job).state == "COMPLETED"


@pytest.mark.django_db
@pytest.mark.parametrize("job_id", ["nope", "00000000-0000-0000-0000-000000000000", "123", "%20"])
@pytest.mark.parametrize(
    "method, suffix",
    [
        ("get", ""),
        ("post", "cancel/"),
        ("post", "pause/"),
        ("post", "resume/"),
        ("post", "retry/"),
        ("post", "signal/"),
        ("get", "events/"),
    ],
)
def test_unknown_ids_are_404(staff_api, job_id, method, suffix):
    resp = (
        getattr(staff_api, method)(f"/api/jobs/{job_id}/{suffix}", {"name": "x"}, format="json")
        if method == "post"
        else staff_api.get(f"/api/jobs/{job_id}/{suffix}")
    )
    assert resp.status_code == 404
    assert resp.json()["code"] == "not_found"


def test_auth_is_required(anon_api):
    assert anon_api.get("/api/jobs/").status_code == 401
    assert anon_api.post("/api/jobs/", {"job_type": "jobs.countdown"}, format="json").status_code == 401


def test_merchant_scoping_404_before_403_and_operator_rights(scoped_access):
    viewer, operator, stranger = user("viewer_m1"), user("operator_m1"), user("viewer_m2")
    job = services.job_create(job_type="jobs.approval_demo", params={}, merchant_id="m1")
    for who in (viewer, operator):
        assert client_for(who).get(f"/api/jobs/{job.pk}/").status_code == 200
        assert client_for(who).get("/api/jobs/").json()["count"] == 1
    # Another merchant's user: 404 for everything, before any role check.
    api = client_for(stranger)
    assert api.get("/api/jobs/").json()["count"] == 0
    for suffix in ("", "events/"):
        assert api.get(f"/api/jobs/{job.pk}/{suffix}").status_code == 404
    for suffix in ("cancel/", "pause/", "resume/", "retry/", "signal/"):
        assert api.post(f"/api/jobs/{job.pk}/{suffix}", {"name": "approve"}, format="json").status_code == 404
    # A viewer of the merchant: 403 for changes.
    api = client_for(viewer)
    for suffix in ("cancel/", "pause/", "resume/", "retry/", "signal/"):
        resp = api.post(f"/api/jobs/{job.pk}/{suffix}", {"name": "approve"}, format="json")
        assert resp.status_code == 403, suffix
        assert resp.json()["code"] == "permission_denied"
    assert api.post("/api/jobs/", {"job_type": "tests.noop", "merchant_id": "m1"}, format="json").status_code == 403
    assert api.post("/api/jobs/", {"job_type": "tests.noop", "merchant_id": "m9"}, format="json").status_code == 404
    # The operator may.
    api = client_for(operator)
    assert api.post(f"/api/jobs/{job.pk}/signal/", {"name": "approve"}, format="json").status_code == 200
    resp = api.post("/api/jobs/", {"job_type": "tests.noop", "merchant_id": "m1"}, format="json")
    assert resp.status_code == 201
    assert Job.objects.get(pk=resp.json()["job_id"]).merchant_id == "m1"


def test_personal_jobs_are_seen_and_changed_by_their_owner_only(scoped_access):
    alice, bob = user("alice"), user("bob")
    resp = client_for(alice).post("/api/jobs/", {"job_type": "tests.noop"}, format="json")
    assert resp.status_code == 201
    job_id = resp.json()["job_id"]
    assert client_for(bob).get(f"/api/jobs/{job_id}/").status_code == 404
    assert client_for(bob).post(f"/api/jobs/{job_id}/cancel/").status_code == 404
    assert client_for(alice).post(f"/api/jobs/{job_id}/cancel/").status_code == 200
