"""Queues (pause/resume), bulk actions on a whole filter, /metrics and the payload search (shared/API.md)."""

import time
import uuid

import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import client_for, wait_until
from tests.jobs.conftest import drain
from tracker import services
from tracker.models import ProcessTracker, TaskQueue, Transition
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


def insert_tasks(n: int, *, status: str, queue: str = "default", task_type: str = "test.noop", tenant: str = ""):
    """n tasks written set-based (the status triggers count them like any insert)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO process_tracker (task_id, task_type, queue, priority, tenant, payload, status, attempts,"
            " max_attempts, run_after, lease_expires_at, locked_by, dedupe_key, last_error, error_details,"
            " created_at, updated_at, processing_started_at, completed_at)"
            " SELECT gen_random_uuid(), %s, %s, 100, %s, '{}', %s, 1, 3, now(), NULL, '', NULL, 'boom', '',"
            " now() - (g || ' milliseconds')::interval, now(), now(), now() FROM generate_series(1, %s) AS g",
            [task_type, queue, tenant, status, n])


@pytest.fixture
def scoped_access(settings):
    """Users named `<role>_<merchant>` see that merchant (tests/jobs/access.py)."""
    settings.TENANT_ACCESS = "tests.jobs.access"


# --- queues ---------------------------------------------------------------------------------------------

def test_queue_list_pause_resume(staff_api, plain_api):
    services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(3)])
    body = staff_api.get("/api/queues/").json()
    assert set(body) == {"count", "next", "previous", "results"}
    (row,) = body["results"]
    assert row == {"name": "default", "paused": False, "due": 3, "running": 0,
                   "oldest_due_seconds": row["oldest_due_seconds"], "completed_last_minute": 0}
    assert plain_api.post("/api/queues/default/pause/").status_code == 403
    for _ in range(2):  # 200 also when already paused
        response = staff_api.post("/api/queues/default/pause")
        assert response.status_code == 200 and response.json()["paused"] is True
    assert TaskQueue.objects.get(name="default").paused
    services.task_create(task_type="test.noop", payload={})  # creating still works
    assert services.task_claim(worker_id="w", limit=10) == []
    assert staff_api.post("/api/queues/nightly/pause/").status_code == 200  # a queue with no tasks yet
    names = {q["name"]: q["paused"] for q in staff_api.get("/api/queues").json()["results"]}
    assert names == {"default": True, "nightly": True}
    assert staff_api.post("/api/queues/default/resume/").json()["paused"] is False
    assert len(services.task_claim(worker_id="w", limit=10)) == 4
    audit = Transition.objects.filter(object_id="default").values_list("to_status", "by_user__username")
    assert list(audit) == [("PAUSED", "staff"), ("ACTIVE", "staff")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_paused_queue_is_not_claimed_by_running_clusters(processes, staff_api):
    for _ in range(2):  # two cluster processes
        processes.start(["manage.py", "qcluster"], Q_WORKERS=1, TRACKER_POLL_SECONDS=0.2)
    first = services.task_create(task_type="test.noop", payload={})
    done = ProcessTracker.objects.filter(pk=first.pk, status="COMPLETED")
    wait_until(done.exists, 60, message="the clusters to run a task")
    assert staff_api.post("/api/queues/default/pause/").status_code == 200
    time.sleep(1.0)
    held = services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(5)])
    time.sleep(3)
    assert set(ProcessTracker.objects.filter(pk__in=[t.pk for t in held]).values_list("status", flat=True)) == \
        {"PENDING"}
    assert staff_api.post("/api/queues/default/resume/").status_code == 200
    wait_until(lambda: ProcessTracker.objects.filter(pk__in=[t.pk for t in held], status="COMPLETED").count() == 5,
               30, message="the paused tasks to run after resume")


# --- bulk -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    ({"action": "retry", "filter": {}}, "filter"),
    ({"action": "retry"}, "filter"),
    ({"action": "retry", "filter": {"statuz": "FAILED"}}, "filter"),
    ({"action": "retry", "filter": {"status": "BROKEN"}}, "filter"),
    ({"action": "retry", "filter": {"created_after": "yesterday"}}, "filter"),
    ({"action": "explode", "filter": {"status": "FAILED"}}, "action"),
    ({"action": "retry", "filter": {"status": "FAILED"}, "extra": 1}, "extra"),
])
def test_bulk_rejects_bad_requests_and_changes_nothing(staff_api, body, field):
    insert_tasks(3, status="FAILED")
    response = staff_api.post("/api/tasks/bulk/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["details"]
    assert ProcessTracker.objects.filter(status="FAILED").count() == 3


@pytest.mark.django_db(transaction=True)
def test_bulk_retry_as_a_job_with_result_and_audit(staff_api, staff_user):
    insert_tasks(5, status="FAILED", queue="held")
    insert_tasks(2, status="COMPLETED", queue="held")
    services.queue_set_paused(name="held", paused=True)  # keep the retried tasks from running in drain()
    response = staff_api.post("/api/tasks/bulk/", {"action": "retry", "filter": {"queue": "held"}}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status_url"].endswith(f"/api/jobs/{body['job_id']}/")
    drain()
    job = staff_api.get(f"/api/jobs/{body['job_id']}/").json()
    assert job["state"] == "COMPLETED" and job["result"] == {"matched": 7, "changed": 5, "skipped": 2}
    assert job["progress"] == 100
    assert ProcessTracker.objects.filter(queue="held", status="PENDING", attempts=0).count() == 5
    rows = Transition.objects.filter(to_status="PENDING", from_status="FAILED")
    assert rows.count() == 5 and {r.by_user_id for r in rows} == {staff_user.pk}
    assert all("bulk retry by staff" in r.reason for r in rows)


@pytest.mark.django_db(transaction=True)
def test_bulk_dry_run_changes_nothing(staff_api):
    insert_tasks(4, status="CANCELLED")
    response = staff_api.post("/api/tasks/bulk/", {"action": "retry", "filter": {"status": "CANCELLED"},
                                                   "dry_run": True}, format="json")
    drain()
    job = staff_api.get(response.json()["status_url"]).json()
    assert job["result"] == {"matched": 4, "changed": 4, "skipped": 0, "dry_run": True}
    assert ProcessTracker.objects.filter(status="CANCELLED").count() == 4


@pytest.mark.django_db(transaction=True)
def test_bulk_is_limited_to_the_callers_merchants_and_operators(scoped_access, django_user_model):
    insert_tasks(3, status="FAILED", tenant="m1", queue="held")
    insert_tasks(4, status="FAILED", tenant="m2", queue="held")
    services.queue_set_paused(name="held", paused=True)
    viewer = client_for(django_user_model.objects.create_user("viewer_m1"))
    operator = client_for(django_user_model.objects.create_user("operator_m1"))
    body = {"action": "retry", "filter": {"status": "FAILED"}}
    assert viewer.post("/api/tasks/bulk/", body, format="json").status_code == 403
    response = operator.post("/api/tasks/bulk/", body, format="json")
    assert response.status_code == 202
    drain()
    assert operator.get(response.json()["status_url"]).json()["result"] == {"matched": 3, "changed": 3,
                                                                            "skipped": 0}
    assert ProcessTracker.objects.filter(tenant="m2", status="FAILED").count() == 4


def test_command_line_uses_the_bulk_service(capsys):
    from django.core.management import call_command

    insert_tasks(3, status="FAILED", task_type="test.permanent", queue="held")
    services.queue_set_paused(name="held", paused=True)
    call_command("tracker_retry", "--type", "test.permanent")
    assert "retried: 3, skipped (not in a legal state): 0" in capsys.readouterr().out
    assert Transition.objects.filter(to_status="PENDING", by_worker="command line").count() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_bulk_retry_of_100000_tasks_completes_as_a_job(processes, staff_api):
    insert_tasks(100_000, status="FAILED", queue="bulk-held")
    services.queue_set_paused(name="bulk-held", paused=True)
    started = time.monotonic()
    response = staff_api.post("/api/tasks/bulk/", {"action": "retry", "filter": {"queue": "bulk-held"}},
                              format="json")
    assert response.status_code == 202
    answered = time.monotonic() - started
    job_url = response.json()["status_url"]
    assert staff_api.get(job_url).json()["state"] in ("CREATED", "RUNNING")  # the request did not do the work
    processes.start(["manage.py", "qcluster"], Q_WORKERS=2)
    job = wait_until(lambda: (j := staff_api.get(job_url).json())["state"] in ("COMPLETED", "FAILED") and j, 600,
                     interval=1, message="the bulk job")
    assert job["state"] == "COMPLETED", job
    assert job["result"] == {"matched": 100_000, "changed": 100_000, "skipped": 0}
    assert ProcessTracker.objects.filter(queue="bulk-held", status="PENDING").count() == 100_000
    print(f"bulk request answered in {answered:.2f} s")


# --- metrics --------------------------------------------------------------------------------------------

def test_metrics_families_and_auth(staff_api, plain_api, anon_api, settings):
    services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(4)])
    services.task_create(task_type="test.permanent", payload={})
    Worker("w").drain(budget_seconds=5)
    services.task_create(task_type="test.noop", payload={})
    services.queue_set_paused(name="default", paused=True)
    assert anon_api.get("/metrics").status_code == 401
    assert plain_api.get("/metrics").status_code == 403
    response = staff_api.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    assert {"tracker_tasks", "tracker_tasks_finished", "tracker_queue_lag_seconds", "tracker_queue_paused",
            "tracker_consumers_alive", "jobs", "recon_staging_entries", "recon_review_queue"} <= set(families)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("tracker_tasks", (("queue", "default"), ("status", "COMPLETED"), ("task_type", "test.noop")))] == 4
    assert samples[("tracker_tasks", (("queue", "default"), ("status", "PENDING"), ("task_type", "test.noop")))] == 1
    assert samples[("tracker_tasks_finished_total", (("outcome", "completed"), ("task_type", "test.noop")))] == 4
    assert samples[("tracker_tasks_finished_total", (("outcome", "failed"), ("task_type", "test.permanent")))] == 1
    assert samples[("tracker_queue_paused", (("queue", "default"),))] == 1
    assert samples[("tracker_queue_lag_seconds", (("queue", "default"),))] >= 0
    assert samples[("jobs", (("job_type", "jobs.countdown"), ("state", "FAILED")))] == 0
    assert ("recon_review_queue", ()) in samples
    settings.METRICS_TOKEN = "s3cret"
    assert anon_api.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
    assert anon_api.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401


# --- payload search -------------------------------------------------------------------------------------

def test_payload_ids_are_found_by_index(client, staff_user):
    job_id, entry_id = str(uuid.uuid4()), str(uuid.uuid4())
    wanted = services.task_create(task_type="test.noop", payload={"job_id": job_id})
    entry_task = services.task_create(task_type="test.noop", payload={"staging_entry_id": entry_id})
    services.task_create(task_type="test.noop", payload={"job_id": str(uuid.uuid4())})
    client.force_login(staff_user)
    page = client.get("/admin/tracker/processtracker/", {"q": job_id}).content.decode()
    assert str(wanted.task_id) in page and str(entry_task.task_id) not in page
    page = client.get("/admin/tracker/processtracker/", {"q": entry_id}).content.decode()
    assert str(entry_task.task_id) in page and str(wanted.task_id) not in page
    from jobs.models import Job

    upload_id = str(uuid.uuid4())
    job = Job.objects.create(job_type="recon.import_csv", params={"upload_id": upload_id})
    import_task = services.task_create(task_type="test.noop", payload={"job_id": str(job.pk)})
    found = services.task_search(ProcessTracker.objects.all(), upload_id)
    assert list(found.values_list("pk", flat=True)) == [import_task.pk]
    qs = services.task_search(ProcessTracker.objects.all(), job_id)
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")  # a tiny table: make the planner show what it can use
        sql, params = qs.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(r[0] for r in cursor.fetchall())
    assert "tracker_payload_job_idx" in plan and "tracker_payload_staging_idx" in plan, plan
