"""Live job pages and lists in a real browser (issue 12 item 2): a running countdown's page rises without a reload,
ends COMPLETED with its log holding exactly the stored events; a watched list shows a new row by itself and pauses
while a row is selected."""

import time

from jobs import services
from jobs.models import JobEvent
from tests.browser.conftest import login, screenshot, wait_for_js
from tests.conftest import wait_until


def staff(django_user_model):
    django_user_model.objects.create_user("ops", password="pw-ops-1", is_staff=True, is_superuser=True)


def test_a_running_job_page_rises_live_and_ends_with_exactly_the_stored_log(page, cluster, django_user_model):
    staff(django_user_model)
    login(page, "ops", "pw-ops-1")
    job = services.job_create(job_type="jobs.countdown", params={"steps": 6, "step_seconds": 1})
    page.goto(f"/admin/jobs/job/{job.pk}/change/")
    page.evaluate("window.__notReloaded = true")
    seen = []
    deadline = time.monotonic() + 90
    shot = False
    while time.monotonic() < deadline:
        progress = int(page.inner_text("#job-progress"))
        if not seen or seen[-1] != progress:
            seen.append(progress)
        if 0 < progress < 100 and not shot:
            # Mid-run: the subtitle (rendered by the server, re-fetched) says RUNNING like the panel.
            wait_for_js(page, "document.querySelector('[data-live-part=subtitle]').textContent.includes('[RUNNING]')")
            assert page.inner_text("#job-state") == "RUNNING"
            assert page.locator("#job-live button[value=pause]").count() == 1  # Pause shows while it can pause
            screenshot(page, "job-page-running")
            shot = True
        if page.inner_text("#job-state") == "COMPLETED":
            break
        time.sleep(0.2)
    assert page.inner_text("#job-state") == "COMPLETED", seen
    rising = [p for p in seen if 0 < p < 100]
    assert len(set(rising)) >= 2 and rising == sorted(rising), seen
    assert page.evaluate("window.__notReloaded") is True  # all of it without a reload
    wait_for_js(page, "document.querySelector('[data-live-part=subtitle]').textContent.includes('[COMPLETED]')")
    assert page.inner_text("#job-step") == "-"  # the step cleared with the completion
    assert page.locator("#job-live button[value=pause]").count() == 0
    stored = list(JobEvent.objects.filter(job=job).order_by("id").values_list("id", "kind", "data"))
    wait_until(lambda: page.locator("#job-log li").count() >= len(stored), 10, message="the log to fill")
    lines = page.eval_on_selector_all(
        "#job-log li", "els => els.map(e => [Number(e.dataset.id), e.className, e.querySelector('.text').textContent])"
    )
    assert [(i, f"kind-{k}") for i, k, _ in stored] == [(i, c) for i, c, _ in lines]
    texts = [t for _, _, t in lines]
    assert "countdown of 6 steps started" in texts and "step 6 of 6  (step: 6)" in texts
    assert not [t for t in texts if "{'" in t or "'}" in t]  # readable text, no Python dict repr
    assert texts[-1] == "COMPLETED"
    screenshot(page, "job-page-completed")

    # Opened again after the end: the same log, replayed from the stored events.
    page.reload()
    wait_until(lambda: page.locator("#job-log li").count() >= len(stored), 10, message="the log to replay")
    time.sleep(1)
    assert page.eval_on_selector_all("#job-log li", "els => els.map(e => Number(e.dataset.id))") == [
        i for i, _, _ in stored
    ]


def test_a_watched_list_refreshes_by_itself_and_pauses_on_a_selection(page, django_user_model):
    staff(django_user_model)
    login(page, "ops", "pw-ops-1")
    first = services.job_create(job_type="jobs.approval_demo", params={})
    page.goto("/admin/jobs/job/")
    page.evaluate("window.__notReloaded = true")
    assert page.locator(f"#result_list a:has-text('{first.pk}')").count() == 1
    second = services.job_create(job_type="jobs.approval_demo", params={})
    page.wait_for_selector(f"#result_list a:has-text('{second.pk}')", timeout=15_000)
    assert page.evaluate("window.__notReloaded") is True
    assert "Auto-refresh every 5 s" in page.inner_text("#live-refresh")
    screenshot(page, "job-list-live")

    page.locator("#result_list input.action-select").first.check()  # a selection pauses the refresh
    third = services.job_create(job_type="jobs.approval_demo", params={})
    wait_for_js(
        page, "document.getElementById('live-refresh').textContent.includes('paused (selection)')", timeout=15_000
    )
    time.sleep(6)
    assert page.locator(f"#result_list a:has-text('{third.pk}')").count() == 0
    assert page.locator(".action-counter").inner_text().startswith("1 of")  # the selection survives
    page.locator("#result_list input.action-select").first.uncheck()
    page.wait_for_selector(f"#result_list a:has-text('{third.pk}')", timeout=15_000)
    # After a swap, Django's selection handling still works on the new rows.
    page.locator("#result_list input.action-select").first.check()
    assert page.locator(".action-counter").inner_text().startswith("1 of")
    assert page.evaluate("window.__notReloaded") is True
