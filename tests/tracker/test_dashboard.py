"""The console's first page (dashboard), the queue page and the bulk flow of the task list, through Django's test
client (tests/browser has the same in Chromium)."""

import re

import pytest

from tests.jobs.conftest import drain
from tracker import services
from tracker.models import ProcessTracker, TaskQueue
from tracker.worker import Worker


@pytest.fixture
def admin_client_logged(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.mark.django_db
def test_dashboard_is_the_admin_index_with_linked_figures(admin_client_logged):
    services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(6)])
    services.task_create(task_type="test.permanent", payload={})
    Worker("w").drain(budget_seconds=5)
    for name in ("hour", "day", "week"):
        page = admin_client_logged.get("/admin/", {"range": name})
        assert page.status_code == 200
        html = page.content.decode()
        assert "Tasks finished per" in html and "<svg" in html and "Review queue" in html
        assert "Jobs and workflows by state" in html and "Consumer slots" in html and "Queues" in html
        assert 'href="/admin/tracker/processtracker/?status__exact=FAILED"' in html
        assert re.search(r'href="/admin/tracker/processtracker/\?task_type=test.noop&amp;status__exact=COMPLETED">6<',
                         html)
    panel = admin_client_logged.get("/admin/dashboard/panel/", {"range": "day"})
    assert panel.status_code == 200 and "<html" not in panel.content.decode()


@pytest.mark.django_db
def test_queue_page_pauses_and_resumes(admin_client_logged):
    services.task_create(task_type="test.noop", payload={})
    page = admin_client_logged.get("/admin/tracker/processtracker/queues/").content.decode()
    assert 'data-queue="default"' in page and 'value="pause"' in page
    admin_client_logged.post("/admin/tracker/processtracker/queues/", {"queue": "default", "op": "pause"})
    assert TaskQueue.objects.get(name="default").paused
    page = admin_client_logged.get("/admin/tracker/processtracker/queues/").content.decode()
    assert "paused" in page and 'value="resume"' in page
    admin_client_logged.post("/admin/tracker/processtracker/queues/", {"queue": "default", "op": "resume"})
    assert not TaskQueue.objects.get(name="default").paused


@pytest.mark.django_db(transaction=True)
def test_task_list_offers_bulk_retry_of_the_whole_filter(admin_client_logged):
    services.task_create_many([services.TaskSpec("test.permanent", {}) for _ in range(60)])
    Worker("w").drain(budget_seconds=20)
    services.queue_set_paused(name="default", paused=True)
    ProcessTracker.objects.filter(task_type="test.permanent").update(queue="held")
    services.queue_set_paused(name="default", paused=False)
    services.queue_set_paused(name="held", paused=True)
    page = admin_client_logged.get("/admin/tracker/processtracker/", {"status__exact": "FAILED"}).content.decode()
    assert "Retry all 60 matching" in page and "Cancel all" not in page
    confirm = admin_client_logged.get("/admin/tracker/processtracker/bulk/",
                                      {"status__exact": "FAILED", "action": "retry"}).content.decode()
    assert 'id="matched">60<' in confirm and 'id="legal">60<' in confirm
    response = admin_client_logged.post("/admin/tracker/processtracker/bulk/",
                                        {"status__exact": "FAILED", "action": "retry"})
    assert response.status_code == 302 and "/admin/jobs/job/" in response["Location"]
    drain()
    assert ProcessTracker.objects.filter(task_type="test.permanent", status="PENDING").count() == 60


@pytest.mark.django_db
def test_consumer_slots_show_their_throughput(admin_client_logged):
    from tracker.models import WorkerHeartbeat

    WorkerHeartbeat.objects.create(slot=0, worker_id="host:1:slot0")
    services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(7)])
    Worker("host:1:slot0").drain(budget_seconds=5)
    page = admin_client_logged.get("/admin/tracker/workerheartbeat/").content.decode()
    assert re.search(r'<td class="field-finished_last_minute">7</td>', page), page[-3000:]
    dashboard = admin_client_logged.get("/admin/").content.decode()
    assert re.search(r"<td>host:1:slot0</td><td>.*?</td><td>7</td><td>7</td>", dashboard)
