"""The dashboard, the queue page and a bulk retry in Chromium, against uvicorn and a real cluster."""

from tests.browser.conftest import login, screenshot
from tests.conftest import wait_until
from tracker import services
from tracker.models import ProcessTracker
from tracker.worker import Worker


def _staff(django_user_model):
    django_user_model.objects.create_user("ops", password="pw-ops-1", is_staff=True, is_superuser=True)


def test_dashboard_shows_charts_and_refreshes_live(page, django_user_model):
    _staff(django_user_model)
    services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(40)])
    services.task_create_many([services.TaskSpec("test.permanent", {}) for _ in range(3)])
    Worker("w").drain(budget_seconds=10)
    login(page, "ops", "pw-ops-1")
    assert page.locator("#dashboard svg.chart").count() >= 2
    assert page.locator("#dashboard").get_by_text("Review queue").count() == 1
    screenshot(page, "dashboard-hour")
    page.click("#dashboard a[data-range=week]")
    page.wait_for_function("document.querySelector('#dashboard .dash-ranges a.current').dataset.range === 'week'")
    screenshot(page, "dashboard-week")
    before = page.get_attribute("#dashboard", "data-refreshed")
    services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(5)])
    Worker("w2").drain(budget_seconds=10)
    page.wait_for_function(f"document.querySelector('#dashboard').dataset.refreshed !== {before!r}", timeout=15000)
    page.click("#dashboard .legend a:has-text('failed')")
    page.wait_for_load_state("domcontentloaded")
    assert "status__exact=FAILED" in page.url
    assert page.locator("#result_list tbody tr").count() == 3


def test_queue_page_pause_and_resume(page, django_user_model):
    _staff(django_user_model)
    services.task_create(task_type="test.noop", payload={})
    login(page, "ops", "pw-ops-1")
    page.goto("/admin/tracker/processtracker/queues/")
    page.click("tr[data-queue=default] button[value=pause]")
    page.wait_for_selector("tr[data-queue=default] button[value=resume]")
    assert page.locator("tr[data-queue=default]").get_by_text("paused").count() == 1
    screenshot(page, "queues-paused")
    page.click("tr[data-queue=default] button[value=resume]")
    page.wait_for_selector("tr[data-queue=default] button[value=pause]")


def test_bulk_retry_of_a_filtered_list(page, django_user_model, cluster):
    _staff(django_user_model)
    services.queue_set_paused(name="held", paused=True)
    services.task_create_many([services.TaskSpec("test.permanent", {}) for _ in range(25)])
    wait_until(lambda: ProcessTracker.objects.filter(status="FAILED").count() == 25, 60, message="failures")
    ProcessTracker.objects.filter(status="FAILED").update(queue="held")  # retried tasks stay PENDING
    login(page, "ops", "pw-ops-1")
    page.goto("/admin/tracker/processtracker/?status__exact=FAILED")
    page.click("a.bulk-retry")
    assert page.inner_text("#legal") == "25"
    screenshot(page, "bulk-retry-confirm")
    page.click("#confirm-bulk")
    page.wait_for_url("**/admin/jobs/job/**")
    wait_until(lambda: ProcessTracker.objects.filter(queue="held", status="PENDING").count() == 25, 60,
               message="the bulk job")
    page.reload()
    screenshot(page, "bulk-retry-job")
