"""The dashboard, the queue page and a bulk retry in Chromium, against uvicorn and a real cluster."""

import datetime as dt
from urllib.parse import parse_qs, urlsplit

from django.db.models import Count
from django.utils import timezone

from jobs.models import Job
from tests.browser.conftest import login, screenshot, wait_for_js
from tests.conftest import wait_until
from tracker import services
from tracker.models import ProcessTracker
from tracker.worker import Worker


def _staff(django_user_model):
    django_user_model.objects.create_user("ops", password="pw-ops-1", is_staff=True, is_superuser=True)


BARS = "#dashboard svg.chart rect[height]:not([fill=transparent])"


def _bars(page) -> int:
    """Data bars drawn in the dashboard's charts (a bar per non-zero value; the transparent ones carry tooltips)."""
    return page.evaluate(
        f"Array.from(document.querySelectorAll({BARS!r})).filter(r => parseFloat(r.getAttribute('height')) > 0).length"
    )


def test_dashboard_shows_charts_and_refreshes_live(page, django_user_model):
    _staff(django_user_model)
    services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(40)])
    services.task_create_many([services.TaskSpec("test.permanent", {}) for _ in range(3)])
    Worker("w").drain(budget_seconds=10)
    login(page, "ops", "pw-ops-1")
    assert page.locator("#dashboard svg.chart").count() >= 2
    assert _bars(page) >= 2  # completed and failed drawn in this minute's bar
    assert page.locator("#dashboard").get_by_text("Review queue").count() == 1
    assert "completed (40)" in page.inner_text("#dashboard .legend")
    screenshot(page, "dashboard-hour")
    for rng in ("day", "week", "hour"):
        page.click(f"#dashboard a[data-range={rng}]")
        wait_for_js(page, f"document.querySelector('#dashboard .dash-ranges a.current').dataset.range === {rng!r}")
        assert page.url.endswith(f"?range={rng}")
        assert page.locator("#dashboard svg.chart").count() >= 2 and _bars(page) >= 2
        assert "completed (40)" in page.inner_text("#dashboard .legend")  # the same tasks, in hourly buckets
        screenshot(page, f"dashboard-{rng}")
    # Live: tasks finished after the page was drawn appear without a reload.
    before = page.get_attribute("#dashboard", "data-refreshed")
    services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(5)])
    Worker("w2").drain(budget_seconds=10)
    wait_for_js(page, f"document.querySelector('#dashboard').dataset.refreshed !== {before!r}", timeout=15_000)
    wait_for_js(page, "document.querySelector('#dashboard .legend').innerText.includes('completed (45)')", 15_000)
    page.click("#dashboard .legend a:has-text('failed')")
    page.wait_for_load_state("domcontentloaded")
    assert "status__exact=FAILED" in page.url
    assert page.locator("#result_list tbody tr").count() == 3


def test_every_dashboard_figure_links_to_its_filtered_list(page, django_user_model):
    """Every link of the dashboard opens a page that answers 200 and keeps its filter (the admin redirects a
    filter it does not know to `?e=1`); the status figure's link lists exactly the tasks it counts."""
    _staff(django_user_model)
    services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(4)])
    services.task_create_many([services.TaskSpec("test.permanent", {}) for _ in range(2)])
    Worker("w").drain(budget_seconds=10)
    services.task_create_many([services.TaskSpec("test.noop", {}) for _ in range(3)])  # PENDING
    login(page, "ops", "pw-ops-1")
    hrefs = page.evaluate(
        "Array.from(new Set(Array.from(document.querySelectorAll('#dashboard a[href]:not([data-range])'))"
        ".map(a => a.getAttribute('href'))))"
    )
    assert len(hrefs) >= 15, hrefs
    for href in hrefs:
        response = page.goto(href)
        assert response.status == 200, href
        landed = parse_qs(urlsplit(page.url).query)
        assert "e" not in landed, (href, page.url)  # a filter the admin refuses sends it to ?e=1
        assert parse_qs(urlsplit(href).query).items() <= landed.items(), (href, page.url)  # the filter kept
    page.goto("/admin/")
    now = page.locator("section.dash-card:has(h2:text-is('Tasks now'))")
    statuses = now.locator("th").all_inner_texts()
    assert now.locator("td a").nth(statuses.index("PENDING")).inner_text() == "3"
    now.locator("td a").nth(statuses.index("PENDING")).click()
    page.wait_for_load_state("domcontentloaded")
    assert "status__exact=PENDING" in page.url
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
    wait_until(
        lambda: ProcessTracker.objects.filter(queue="held", status="PENDING").count() == 25, 60, message="the bulk job"
    )
    page.reload()
    screenshot(page, "bulk-retry-job")
    page.wait_for_selector("#job-progress")
    wait_for_js(page, "document.querySelector('#job-progress').textContent.trim() === '100'", timeout=30_000)
    assert Job.objects.get(job_type="tracker.bulk_tasks").result == {"matched": 25, "changed": 25, "skipped": 0}


def test_bulk_cancel_of_a_whole_filter_runs_as_a_job(page, django_user_model, cluster):
    """The bulk cancel ("Cancel all N matching") over a filter that also matches finished tasks: the count of the
    cancellable ones, the confirmation (and its way back), a job with progress, and exactly those tasks CANCELLED."""
    _staff(django_user_model)
    services.task_create_many([services.TaskSpec("test.noop", {"i": i}) for i in range(5)])
    wait_until(lambda: ProcessTracker.objects.filter(status="COMPLETED").count() == 5, 60, message="the first five")
    later = timezone.now() + dt.timedelta(hours=1)  # PENDING, not yet due: the cluster leaves them
    services.task_create_many([services.TaskSpec("test.noop", {"i": i}, run_after=later) for i in range(5, 35)])
    login(page, "ops", "pw-ops-1")
    page.goto("/admin/tracker/processtracker/?task_type=test.noop")
    assert page.text_content("a.bulk-cancel").strip() == "Cancel all 30 matching"
    page.click("a.bulk-cancel")
    assert (page.inner_text("#matched"), page.inner_text("#legal")) == ("35", "30")
    page.click("a.cancel-link")  # "No, take me back": nothing changes
    page.wait_for_load_state("domcontentloaded")
    assert ProcessTracker.objects.filter(status="CANCELLED").count() == 0 and not Job.objects.exists()
    page.click("a.bulk-cancel")
    page.click("#confirm-bulk")
    page.wait_for_url("**/admin/jobs/job/**")
    wait_for_js(page, "document.querySelector('#job-progress').textContent.trim() === '100'", timeout=30_000)
    screenshot(page, "bulk-cancel-job")
    counts = dict(ProcessTracker.objects.filter(task_type="test.noop").values_list("status").annotate(n=Count("pk")))
    assert counts == {"CANCELLED": 30, "COMPLETED": 5}
    job = Job.objects.get(job_type="tracker.bulk_tasks")
    assert job.result == {"matched": 35, "changed": 30, "skipped": 5} and job.owner.username == "ops"
