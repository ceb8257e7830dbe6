"""The review queue's "Reprocess all N matching" and "Ignore all N matching" in Chromium: the count on the list,
the confirmation (a reason required to ignore), a job with progress, every matching entry changed."""

from jobs.models import Job
from recon.models import StagingEntry
from tests.browser.conftest import drain, login, screenshot, staff_and_acme, wait_for_js
from tests.recon.factories import stage


def test_reprocess_then_ignore_all_matching_review_entries(page, django_user_model):
    merchant, payments, bank = staff_and_acme(django_user_model)
    review = [stage(bank, mode="CONFIRMATION", side="CREDIT", order_id=f"none-{i}") for i in range(7)]
    fine = stage(payments, order_id="fine")
    drain()
    ids = [e.pk for e in review]
    assert set(StagingEntry.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"NEEDS_MANUAL_REVIEW"}
    tasks_before = dict(StagingEntry.objects.filter(pk__in=ids).values_list("pk", "task_id"))

    login(page, "ops", "pw-ops-1")
    page.goto("/admin/recon/stagingentry/?queue=review")
    assert page.text_content("a.review-bulk-reprocess").strip() == "Reprocess all 7 matching"
    page.click("a.review-bulk-reprocess")
    assert page.inner_text("#review-n") == "7"
    page.click("#confirm-review-bulk")
    page.wait_for_url("**/admin/jobs/job/**")
    drain()  # the job's chunks, then the entries' new tasks (no match yet: back to review)
    drain()
    page.reload()
    wait_for_js(page, "document.querySelector('#job-progress').textContent.trim() === '100'", timeout=30_000)
    job = Job.objects.get(job_type="recon.review_bulk")
    assert job.state == "COMPLETED" and job.result == {"matched": 7, "changed": 7, "skipped": 0}
    after = dict(StagingEntry.objects.filter(pk__in=ids).values_list("pk", "task_id"))
    assert all(after[pk] != tasks_before[pk] for pk in ids)  # each entry ran again, under a new task

    page.goto("/admin/recon/stagingentry/?queue=review")
    page.click("a.review-bulk-ignore")
    assert page.inner_text("#review-n") == "7"
    page.click("#confirm-review-bulk")  # no reason: refused, nothing started
    page.wait_for_load_state("domcontentloaded")
    assert Job.objects.filter(job_type="recon.review_bulk").count() == 1
    if page.locator("#reason").count() == 0:
        page.click("a.review-bulk-ignore")
    page.fill("#reason", "duplicates of the old bank feed")
    screenshot(page, "review-bulk-ignore-confirm")
    page.click("#confirm-review-bulk")
    page.wait_for_url("**/admin/jobs/job/**")
    drain()
    page.reload()
    wait_for_js(page, "document.querySelector('#job-progress').textContent.trim() === '100'", timeout=30_000)
    screenshot(page, "review-bulk-ignore-job")
    assert set(StagingEntry.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"ARCHIVED"}
    assert StagingEntry.objects.get(pk=fine.pk).status == "PROCESSED"
