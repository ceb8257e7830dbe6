"""The workflows API (shared/API.md, "Workflows (DAG jobs)") and idempotent POST /api/jobs/."""

import pytest

from jobs.models import Job
from tests.conftest import client_for
from tests.jobs.conftest import drain
from tests.jobs.test_api import user

pytestmark = pytest.mark.django_db(transaction=True)

STEP_FIELDS = {
    "name",
    "state",
    "depends_on",
    "attempts",
    "max_attempts",
    "queued_at",
    "started_at",
    "finished_at",
    "duration_ms",
    "next_attempt_at",
    "result",
    "error",
}


def test_workflows_list_and_detail(staff_api):
    body = staff_api.get("/api/workflows/").json()
    assert {"count", "next", "previous", "results"} <= set(body)
    diamond = next(w for w in body["results"] if w["name"] == "jobs.diamond")
    assert diamond == staff_api.get("/api/workflows/jobs.diamond").json()
    assert diamond["version"] == 1 and diamond["description"]
    assert diamond["steps"] == [
        {"name": "start", "depends_on": [], "max_attempts": 3},
        {"name": "left", "depends_on": ["start"], "max_attempts": 3},
        {"name": "right", "depends_on": ["start"], "max_attempts": 3},
        {"name": "join", "depends_on": ["left", "right"], "max_attempts": 3},
    ]
    assert staff_api.get("/api/workflows/nope.nothing/").status_code == 404


def test_a_run_shows_its_workflow_and_steps_and_other_jobs_do_not(staff_api):
    resp = staff_api.post("/api/jobs/", {"job_type": "jobs.diamond", "params": {"max_attempts": 2}}, format="json")
    assert resp.status_code == 201, resp.json()
    run = resp.json()
    assert run["workflow"] == {"name": "jobs.diamond", "version": 1}
    assert [s["name"] for s in run["steps"]] == ["start", "left", "right", "join"]
    assert all(set(s) == STEP_FIELDS and s["max_attempts"] == 2 for s in run["steps"])
    drain()
    run = staff_api.get(f"/api/jobs/{run['job_id']}/").json()
    assert run["state"] == "COMPLETED" and run["progress"] == 100
    assert run["result"] == {"join": {"step": "join", "parents": ["left", "right"]}}
    assert all(s["state"] == "COMPLETED" and s["duration_ms"] is not None for s in run["steps"])
    other = staff_api.post("/api/jobs/", {"job_type": "jobs.countdown", "params": {"steps": 1}}, format="json").json()
    assert other["workflow"] is None and other["steps"] == [] and other["schema_version"] == 1
    bad = staff_api.post("/api/jobs/", {"job_type": "jobs.diamond", "params": {"max_attempts": 11}}, format="json")
    assert bad.status_code == 400


def test_idempotency_key_returns_the_existing_run_or_409(staff_api):
    body = {"job_type": "jobs.diamond", "params": {}, "idempotency_key": "settle-2026-11-30"}
    first = staff_api.post("/api/jobs/", body, format="json")
    again = staff_api.post("/api/jobs/", body, format="json")
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["job_id"] == again.json()["job_id"]
    other = staff_api.post("/api/jobs/", {**body, "params": {"sleep_seconds": 1}}, format="json")
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    assert Job.objects.count() == 1


def test_run_retry_and_step_retry_endpoints(staff_api, scoped_access):
    run = staff_api.post(
        "/api/jobs/",
        {"job_type": "jobs.diamond", "params": {"fail_attempts": {"right": 1}, "max_attempts": 1}},
        format="json",
    ).json()
    drain()
    url = f"/api/jobs/{run['job_id']}"
    assert staff_api.get(url).json()["state"] == "FAILED"
    assert staff_api.post(f"{url}/steps/nope/retry/").status_code == 404
    assert staff_api.post(f"{url}/steps/join/retry/").status_code == 409  # a parent FAILED
    viewer = client_for(user("viewer_m1"))
    assert viewer.post(f"{url}/steps/right/retry/").status_code == 404  # personal job of another user
    resp = staff_api.post(f"{url}/steps/right/retry/")
    assert resp.status_code == 200 and resp.json()["state"] in ("CREATED", "RUNNING")
    drain()
    done = staff_api.get(url).json()
    assert done["state"] == "COMPLETED"
    assert {s["name"]: s["attempts"] for s in done["steps"]} == {"start": 1, "left": 1, "right": 2, "join": 1}
    assert staff_api.post(f"{url}/steps/right/retry/").status_code == 409  # not FAILED
    assert staff_api.post(f"{url}/retry/", {"from_start": True}, format="json").status_code == 409


def test_stats(staff_api, scoped_access):
    staff_api.post("/api/jobs/", {"job_type": "jobs.diamond", "params": {}}, format="json")
    staff_api.post("/api/jobs/", {"job_type": "test.permanent", "params": {}}, format="json")
    drain()
    stats = staff_api.get("/api/workflows/stats/").json()
    assert set(stats) == {"since", "runs", "steps", "retrying", "exhausted", "slowest_steps"}
    assert stats["runs"]["COMPLETED"] == 1 and stats["runs"]["FAILED"] == 1
    assert stats["steps"]["COMPLETED"] == 6 and stats["steps"]["FAILED"] == 1 and stats["exhausted"] == 1
    slow = stats["slowest_steps"]
    assert {(s["workflow"], s["step"]) for s in slow} >= {("jobs.diamond", "join"), ("test.permanent", "a")}
    assert all(set(s) == {"workflow", "step", "runs", "p50_ms", "p95_ms", "max_ms", "avg_attempts"} for s in slow)
    assert [s["p95_ms"] for s in slow] == sorted([s["p95_ms"] for s in slow], reverse=True)
    only = staff_api.get("/api/workflows/stats/?workflow=jobs.diamond").json()
    assert only["runs"]["FAILED"] == 0 and all(s["workflow"] == "jobs.diamond" for s in only["slowest_steps"])
    later = staff_api.get("/api/workflows/stats/", {"since": "2999-01-01T00:00:00Z"}).json()
    assert sum(later["runs"].values()) == 0 and later["slowest_steps"] == []
    assert staff_api.get("/api/workflows/stats/?since=yesterday").status_code == 400
    outsider = client_for(user("viewer_zz"))
    assert sum(outsider.get("/api/workflows/stats/").json()["runs"].values()) == 0
