"""The review queue worked in a real browser: search an order id, open the entry, match it (the candidate with
the same key pre-selected), and book a difference beyond tolerance as a write-off. Screenshots under
var/screenshots/review-*.png."""

import re
from decimal import Decimal

from recon.models import Entry, StagingEntry
from tests.browser.conftest import drain, login, screenshot, staff_and_acme
from tests.recon.factories import AccountFactory, stage


def test_review_entry_from_search_to_match_and_write_off(page, django_user_model):
    merchant, payments, bank = staff_and_acme(django_user_model)
    writeoffs = AccountFactory(merchant=merchant, account_name="Write-offs", account_type="DEBIT_NORMAL")
    stage(payments, amount="1409.39", order_id="ord-2001")
    stage(payments, amount="55.00", order_id="ord-2002")
    drain()
    short = stage(bank, mode="CONFIRMATION", side="CREDIT", amount="1400.00", order_id="ord-2001")  # beyond tolerance
    typo = stage(bank, mode="CONFIRMATION", side="CREDIT", amount="55.00", order_id="ORD 2002")  # no match
    drain()
    assert StagingEntry.objects.filter(status="NEEDS_MANUAL_REVIEW").count() == 2

    login(page, "ops", "pw-ops-1")
    page.goto("/admin/recon/stagingentry/?queue=review")
    page.fill("#searchbar", "ord-2001")
    page.press("#searchbar", "Enter")
    page.wait_for_load_state("domcontentloaded")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    row = rows.first
    assert "1,400.00 USD" in row.inner_text() and "Mismatch" in row.inner_text()
    reason = page.locator("#result_list th.column-reason")
    box = reason.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1400  # the Reason column is on screen at 1,400 px
    screenshot(page, "review-search")

    row.locator("th a, td a").first.click()
    page.wait_for_load_state("domcontentloaded")
    assert "ord-2001 · 1,400.00 USD" in page.content()
    assert page.locator("input[name=_save]").count() == 0  # read-only page: no Save button
    screenshot(page, "review-entry")

    page.goto(f"/admin/recon/stagingentry/{short.pk}/match/")
    expected = Entry.objects.get(status="EXPECTED", metadata__order_id="ord-2001")
    assert page.locator(f"input[name=entry_id][value='{expected.pk}']").is_checked()  # same key pre-selected
    page.click("input[type=submit][name=match]")
    page.wait_for_load_state("domcontentloaded")
    assert "Match failed" in page.locator(".messagelist").inner_text()
    assert "write-off" in page.locator(".messagelist").inner_text()
    page.check("input[name=write_off]")
    page.select_option("select[name=difference_account]", str(writeoffs.pk))
    page.fill("textarea[name=reason]", "Provider fee withheld")
    screenshot(page, "review-match-write-off")
    page.click("input[type=submit][name=match]")
    page.wait_for_load_state("domcontentloaded")
    assert "Matched with a write-off." in page.locator(".messagelist").inner_text()
    assert "write-off of 9.3900 USD to Write-offs" in page.content()  # the audit trail on the entry's page
    screenshot(page, "review-entry-written-off")
    short.refresh_from_db()
    assert short.status == "PROCESSED"
    assert Entry.objects.get(account=writeoffs).amount == Decimal("9.39")

    # The second entry: searched by its own key, matched to the expectation of the same amount.
    page.goto("/admin/recon/stagingentry/?queue=review")
    assert page.locator("#result_list tbody tr").count() == 1
    page.locator("#result_list tbody tr input.action-select").check()
    page.select_option("select[name=action]", "match_selected")
    page.click("button[name=index], .actions button[type=submit]")
    page.wait_for_load_state("domcontentloaded")
    assert re.search(rf"/admin/recon/stagingentry/{typo.pk}/match/$", page.url)
    page.check(f"input[name=entry_id][value='{Entry.objects.get(status='EXPECTED').pk}']")
    page.click("input[type=submit][name=match]")
    page.wait_for_load_state("domcontentloaded")
    assert "Matched." in page.locator(".messagelist").inner_text()
    page.goto("/admin/recon/stagingentry/?queue=review")
    assert page.locator("#result_list tbody tr").count() == 0
    screenshot(page, "review-queue-empty")
