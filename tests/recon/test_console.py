"""The recon console (issue 12): the ledger changed only through services, the review queue for daily work,
the period-close confirmation and readable pages. Django's test client on PostgreSQL."""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, connection, transaction
from django.test import Client

from recon import errors, formatting, services, uploads
from recon.models import Account, ClosedPeriod, Entry, ReconRule, StagingEntry, Transaction
from tests.recon.factories import AccountFactory, MerchantFactory, stage
from tracker import audit
from tracker.worker import Worker

pytestmark = pytest.mark.django_db

IN_OCT = dt.datetime(2026, 10, 15, 12, tzinfo=dt.UTC)


@pytest.fixture
def console(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def drain():
    Worker("console-test").drain(budget_seconds=20)


def page(client, url, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


# --- 3. the ledger changes only through services ---------------------------------------------------------

def test_account_currency_type_and_opening_balance_freeze_once_it_has_entries(console, ledger):
    url = f"/admin/recon/account/{ledger.payments.pk}/change/"
    form = {"account_name": "payments", "account_type": "DEBIT_NORMAL", "currency": "EUR", "initial_balance": "0"}
    # No entries yet: the console changes the currency through the service (any case, stored upper).
    response = console.post(url, {**form, "currency": "eur"})
    assert response.status_code == 302
    ledger.payments.refresh_from_db()
    assert ledger.payments.currency == "EUR"
    services.account_update(account=ledger.payments, currency="USD")
    stage(ledger.payments)
    # Now the fields are read-only on the page, and a forged POST changes nothing.
    html = page(console, url)
    assert 'name="currency"' not in html and 'name="initial_balance"' not in html and 'name="account_name"' in html
    console.post(url, {**form, "account_name": "renamed", "initial_balance": "5000"})
    ledger.payments.refresh_from_db()
    assert (ledger.payments.account_name, ledger.payments.currency, ledger.payments.initial_balance) == (
        "renamed", "USD", Decimal("0"))
    # The service refuses with a 409 ...
    with pytest.raises(errors.AccountHasEntriesError):
        services.account_update(account=ledger.payments, initial_balance="5000")
    # ... and so does the database, whoever writes.
    with pytest.raises(IntegrityError, match="cannot change"), transaction.atomic():
        Account.objects.filter(pk=ledger.payments.pk).update(currency="EUR")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE recon_account SET initial_balance = 5000 WHERE account_id = %s", [ledger.payments.pk])
    Account.objects.filter(pk=ledger.payments.pk).update(account_name="still renamable")


def test_recon_rule_admin_validates_like_the_api(console, ledger):
    eur = AccountFactory(merchant=ledger.merchant, currency="EUR", account_name="eur")
    stranger = AccountFactory(merchant=MerchantFactory(merchant_id="other"), account_name="stranger")
    base = {"merchant": "acme", "match_key": "order_id", "amount_tolerance": "0", "amount_tolerance_pct": "0",
            "date_window_days": ""}
    free = AccountFactory(merchant=ledger.merchant, account_name="free")
    html = console.post("/admin/recon/reconrule/add/", {**base, "account_one": free.pk,
                                                         "account_two": eur.pk}).content.decode()
    assert "Both accounts must share a currency." in html
    html = console.post("/admin/recon/reconrule/add/", {**base, "account_one": free.pk,
                                                         "account_two": stranger.pk}).content.decode()
    assert "not found" in html
    html = console.post("/admin/recon/reconrule/add/", {**base, "account_one": free.pk, "account_two": ledger.bank.pk,
                                                         "amount_tolerance": "1"}).content.decode()
    assert "A rule with a tolerance needs a difference account." in html
    assert ReconRule.objects.count() == 1
    ok = console.post("/admin/recon/reconrule/add/", {**base, "account_one": free.pk, "account_two": ledger.bank.pk})
    assert ok.status_code == 302 and ReconRule.objects.count() == 2
    rule = ReconRule.objects.get(account_one=free)
    assert 'name="_save"' not in page(console, f"/admin/recon/reconrule/{rule.pk}/change/")  # not edited in place


def test_merchant_and_membership_admins_save_through_the_services(console, django_user_model):
    html = console.post("/admin/recon/merchant/add/", {"merchant_id": "", "merchant_name": "  "}).content.decode()
    assert "This field is required." in html
    inline = {"memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"}
    response = console.post("/admin/recon/merchant/add/", {"merchant_id": "shop", "merchant_name": " Shop ", **inline})
    assert response.status_code == 302
    from recon.models import Merchant, MerchantMembership

    assert Merchant.objects.get(pk="shop").merchant_name == "Shop"
    user = django_user_model.objects.create_user("clerk")
    assert console.post("/admin/recon/merchantmembership/add/", {"user": user.pk, "merchant": "shop",
                                                                 "role": "operator"}).status_code == 302
    assert MerchantMembership.objects.get(user=user).role == "operator"


def test_nothing_of_the_ledger_is_deleted_and_timestamps_are_read_only(console, ledger):
    entry = stage(ledger.payments)
    drain()
    entry.refresh_from_db()
    txn = Transaction.objects.get()
    for url in [f"/admin/recon/stagingentry/{entry.pk}/delete/", f"/admin/recon/transaction/{txn.pk}/delete/",
                f"/admin/recon/entry/{Entry.objects.first().pk}/delete/",
                f"/admin/tracker/processtracker/{entry.task_id}/delete/"]:
        assert console.get(url).status_code in (403, 302), url
        console.post(url, {"post": "yes"})
    assert StagingEntry.objects.filter(pk=entry.pk).exists() and Transaction.objects.filter(pk=txn.pk).exists()
    changelist = page(console, "/admin/recon/stagingentry/")
    assert "delete_selected" not in changelist
    # An account with entries cannot be deleted either (the service's 409), and says so.
    response = console.post(f"/admin/recon/account/{ledger.payments.pk}/delete/", {"post": "yes"}, follow=True)
    assert Account.objects.filter(pk=ledger.payments.pk).exists() and "Cannot delete" in response.content.decode()
    for url in [f"/admin/recon/account/{ledger.payments.pk}/change/", "/admin/recon/merchant/acme/change/"]:
        assert 'name="created_at' not in page(console, url)


def test_read_only_pages_have_no_save_button(console, ledger):
    entry = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="none")
    drain()
    html = page(console, f"/admin/recon/stagingentry/{entry.pk}/change/")
    assert 'name="_save"' not in html and 'name="_continue"' not in html and "Reprocess" in html
    assert 'name="_save"' not in page(console, f"/admin/recon/transaction/{Transaction.objects.first().pk}/change/"
                                      if Transaction.objects.exists() else "/admin/recon/transaction/")


# --- 4. the review queue -----------------------------------------------------------------------------

@pytest.fixture
def queue(ledger):
    """Three entries in review (two without a match, one in JPY on another account) and one processed."""
    jpy = AccountFactory(merchant=ledger.merchant, account_name="yen", currency="JPY", account_type="CREDIT_NORMAL")
    waiting = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="1409.39", order_id="ord-2001",
                    metadata={"payout_ref": "PO-77"})
    other = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="5", order_id="ord-2002")
    yen = stage(jpy, mode="CONFIRMATION", side="CREDIT", amount="1500", order_id="ord-3001")
    done = stage(ledger.payments, order_id="ord-9")
    drain()
    return type("Queue", (), {"waiting": waiting, "other": other, "yen": yen, "done": done, "jpy": jpy})


def rows(html: str) -> list[str]:
    return re.findall(r'<tr[^>]*>\s*<td class="action-checkbox">.*?</tr>', html, re.S)


def test_review_queue_columns_read_for_a_person(console, queue):
    html = page(console, "/admin/recon/stagingentry/", queue="review")
    header = re.search(r"<thead>.*?</thead>", html, re.S).group(0)
    for column in ("Key", "Amount", "Account", "Reason", "Age"):
        assert column in header
    assert len(rows(html)) == 3
    assert "ord-2001" in html and "1,409.39 USD" in html and "1,500 JPY" in html
    assert "NoMatchFound: " in html and "NoReconRuleFound: " in html and "bank" in html


def test_review_queue_filters_by_account_reason_and_age(console, queue, ledger):
    by_account = page(console, "/admin/recon/stagingentry/", queue="review", account=str(queue.jpy.pk))
    assert len(rows(by_account)) == 1 and "ord-3001" in by_account
    assert len(rows(page(console, "/admin/recon/stagingentry/", queue="review", reason="NoMatchFoundError"))) == 2
    no_rule = page(console, "/admin/recon/stagingentry/", queue="review", reason="NoReconRuleFoundError")
    assert len(rows(no_rule)) == 1 and "ord-3001" in no_rule
    assert len(rows(page(console, "/admin/recon/stagingentry/", queue="review", reason="MismatchError"))) == 0
    StagingEntry.objects.filter(pk=queue.other.pk).update(created_at=IN_OCT)
    week = page(console, "/admin/recon/stagingentry/", queue="review", age="old")
    assert len(rows(week)) == 1 and "ord-2002" in week
    assert len(rows(page(console, "/admin/recon/stagingentry/", queue="review", age="1d"))) == 2


def test_review_queue_search_by_any_metadata_value(console, queue):
    found = page(console, "/admin/recon/stagingentry/", q="ord-2001", queue="review")
    assert len(rows(found)) == 1 and "1,409.39 USD" in found
    assert len(rows(page(console, "/admin/recon/stagingentry/", q="ord-9"))) == 1  # any status, outside the queue
    assert len(rows(page(console, "/admin/recon/stagingentry/", q="ord-9", queue="review"))) == 0
    assert len(rows(page(console, "/admin/recon/stagingentry/", q="PO-77"))) == 1  # any key
    assert len(rows(page(console, "/admin/recon/stagingentry/", q=str(queue.yen.pk)))) == 1  # the id
    assert len(rows(page(console, "/admin/recon/stagingentry/", q="ord-20"))) == 0  # values match exactly
    # Which index serves it depends on the table's size: `make bench` (review_search) records the plan at 1M rows.


def test_match_form_preselects_the_candidate_with_the_same_key_and_books_a_write_off(console, ledger, staff_user):
    stage(ledger.payments, amount="10.00", order_id="other-order")
    stage(ledger.payments, amount="100.00", order_id="ord-5")
    drain()
    writeoffs = AccountFactory(merchant=ledger.merchant, account_name="write-offs")
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="97.00", order_id="ord-5")
    drain()
    confirmation.refresh_from_db()
    assert confirmation.metadata["error_type"] == "MismatchError"
    target = Entry.objects.get(status="EXPECTED", metadata__order_id="ord-5")
    url = f"/admin/recon/stagingentry/{confirmation.pk}/match/"
    html = page(console, url)
    checked = re.search(r'<input[^>]*value="([0-9a-f-]+)"[^>]*checked', html) or \
        re.search(r'<input[^>]*checked[^>]*value="([0-9a-f-]+)"', html)
    assert checked and checked.group(1) == str(target.pk)
    assert "ord-5 · 100.00 USD · CREDIT" in html and "same key" in html
    # Beyond tolerance without a write-off: refused, nothing changes.
    refused = console.post(url, {"entry_id": str(target.pk)}, follow=True).content.decode()
    assert "Match failed" in refused and "write-off" in refused
    done = console.post(url, {"entry_id": str(target.pk), "write_off": "on", "reason": "short payment accepted",
                              "difference_account": str(writeoffs.pk)}, follow=True).content.decode()
    assert "Matched with a write-off." in done
    confirmation.refresh_from_db()
    assert confirmation.status == "PROCESSED" and confirmation.metadata["write_off"]["amount"] == "3.0000"
    assert Entry.objects.get(account=writeoffs).amount == Decimal("3")


def test_write_off_in_the_console_needs_the_permission(ledger, django_user_model):
    from recon.models import MerchantMembership

    user = django_user_model.objects.create_user("clerk", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="recon",
                                                         codename__in=["view_stagingentry", "change_stagingentry"]))
    client = Client()
    client.force_login(user)
    MerchantMembership.objects.create(user=user, merchant=ledger.merchant, role="operator")
    stage(ledger.payments, amount="100.00", order_id="ord-5")
    drain()
    writeoffs = AccountFactory(merchant=ledger.merchant, account_name="write-offs")
    confirmation = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", amount="97.00", order_id="ord-5")
    drain()
    target = Entry.objects.get(status="EXPECTED")
    url = f"/admin/recon/stagingentry/{confirmation.pk}/match/"
    assert "You do not have the <code>recon.write_off</code> permission." in page(client, url)
    html = client.post(url, {"entry_id": str(target.pk), "write_off": "on", "reason": "x",
                             "difference_account": str(writeoffs.pk)}, follow=True).content.decode()
    assert "Match failed" in html and "recon.write_off" in html
    assert StagingEntry.objects.get(pk=confirmation.pk).status == "NEEDS_MANUAL_REVIEW"


@pytest.mark.django_db(transaction=True)
def test_entry_page_shows_its_audit_trail_links_and_history(console, ledger):
    content = b"order_id,amount,currency,transaction_date,type\nord-7,10.00,usd,2026-11-02,Payment\n"
    job = uploads.file_import_start(account=ledger.payments, file=SimpleUploadedFile("nov.csv", content),
                                   name="nov.csv", processing_mode="TRANSACTION")
    drain()
    entry = StagingEntry.objects.get()
    assert entry.currency == "USD"  # lowercase accepted, stored upper
    html = page(console, f"/admin/recon/stagingentry/{entry.pk}/change/")
    assert "ord-7 · 10.00 USD" in html
    assert f"/admin/tracker/processtracker/{entry.task_id}/change/" in html
    assert f"/admin/jobs/job/{job.pk}/change/" in html and "/admin/recon/upload/" in html
    txn = Transaction.objects.get()
    assert f"/admin/recon/transaction/{txn.pk}/change/" in html and f"{txn.logical_transaction_id} v1" in html
    assert "PENDING" in html and "PROCESSED" in html  # the audit trail
    history = page(console, f"/admin/recon/stagingentry/{entry.pk}/history/")
    assert "doesn’t have a change history" not in history and "doesn't have a change history" not in history
    for row in audit.history(entry):
        assert row.to_status in history
    txn_history = page(console, f"/admin/recon/transaction/{txn.pk}/history/")
    assert "doesn’t have a change history" not in txn_history and "Every state change" in txn_history


def test_bulk_reprocess_on_a_selection(console, queue):
    selected = [str(queue.waiting.pk), str(queue.done.pk)]
    html = console.post("/admin/recon/stagingentry/", {"action": "reprocess_selected", "_selected_action": selected},
                        follow=True).content.decode()
    assert "Reprocess: 1 done, 1 skipped" in html, re.findall(r'<ul class="messagelist">.*?</ul>', html, re.S)
    assert StagingEntry.objects.get(pk=queue.waiting.pk).status == "PENDING"


# --- 5. closing a period: the console's confirmation ------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_approve_confirmation_shows_what_is_open_and_forces_with_a_reason(console, ledger, staff_user):
    from jobs import services as job_services
    from jobs.models import Job

    review = stage(ledger.bank, mode="CONFIRMATION", side="CREDIT", order_id="oct-1", amount="12.5", when=IN_OCT)
    drain()
    job = job_services.job_create(job_type="recon.close_period", merchant_id="acme", owner=staff_user,
                                  params={"merchant_id": "acme", "start_date": "2026-10-01",
                                          "end_date": "2026-10-31"})
    drain()
    assert Job.objects.get(pk=job.pk).state == "WAITING"
    # The job page's Approve leads to the confirmation page instead of approving at once.
    response = console.post(f"/admin/jobs/job/{job.pk}/act/", {"action": "signal:approve"})
    confirm = f"/admin/recon/closedperiod/approve/{job.pk}/"
    assert response.status_code == 302 and response["Location"] == confirm
    html = page(console, confirm)
    assert "Still open: 1 staging entry (1 in review, 0 pending)" in html
    assert "oct-1 · 12.50 USD" in html and f"/admin/recon/stagingentry/{review.pk}/change/" in html
    html = console.post(confirm, {"force": "on", "reason": ""}).content.decode()
    assert "A forced close needs a reason." in html
    console.post(confirm, {"confirm": "1"})  # a plain approve: the job logs and keeps waiting
    drain()
    assert Job.objects.get(pk=job.pk).state == "WAITING" and not ClosedPeriod.objects.exists()
    console.post(confirm, {"force": "on", "reason": "accepted by the controller"})
    drain()
    assert Job.objects.get(pk=job.pk).state == "COMPLETED"
    period = ClosedPeriod.objects.get()
    html = page(console, f"/admin/recon/closedperiod/{period.pk}/change/")
    assert "staff" in html and formatting.when(period.closed_at) in html and "accepted by the controller" in html
    listing = page(console, "/admin/recon/closedperiod/")
    assert formatting.when(period.closed_at) in listing and 'href="/admin/recon/closedperiod/add/"' not in listing


# --- 7. readable ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("amount", "currency", "shown"), [
    ("1409.390000000000", "USD", "1,409.39 USD"), ("240.0000", "USD", "240.00 USD"), ("1500", "JPY", "1,500 JPY"),
    ("1.2345", "USD", "1.2345 USD"), ("12.5", "BHD", "12.500 BHD"), ("-5000", "EUR", "-5,000.00 EUR"),
    ("1000.0000", "KRW", "1,000 KRW"),
])
def test_money_respects_the_currency_minor_units(amount, currency, shown):
    assert formatting.money(Decimal(amount), currency) == shown


def test_pages_read_for_a_person(console, ledger, queue):
    html = page(console, f"/admin/recon/account/{ledger.bank.pk}/change/")
    assert "posted: 0.00 USD" in html
    listing = page(console, "/admin/recon/stagingentry/")
    assert re.search(r'<a href="/admin/">\s*View site\s*</a>', listing)
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", page(console, "/admin/recon/account/"))
    summary = page(console, "/admin/recon/stagingentry/summary/")
    counts = re.findall(r"\(([\d,]+) (entry|entries)\)", summary)
    assert counts and all((n == "1") == (word == "entry") for n, word in counts)
    assert formatting.plural(1, "entry", "entries") == "1 entry" and formatting.plural(2, "row") == "2 rows"


@pytest.mark.django_db(transaction=True)
def test_import_errors_as_a_table_with_a_csv_download(console, ledger):
    content = (b"order_id,amount,currency,transaction_date,type\n"
               b"ok-1,10.00,USD,2026-11-02,Payment\nbad-1,abc,USD,2026-11-02,Payment\nbad-2,5,XXY,2026-11-02,Payment\n")
    uploads.file_import_start(account=ledger.payments, file=SimpleUploadedFile("mixed.csv", content),
                             name="mixed.csv", processing_mode="TRANSACTION")
    drain()
    from recon.models import Upload

    upload = Upload.objects.get()
    html = page(console, f"/admin/recon/upload/{upload.pk}/change/")
    assert "<th>Row</th><th>Problem</th>" in html and "amount &#x27;abc&#x27; is not a number" in html
    assert "1 entry imported, 2 rows failed" in html
    csv_response = console.get(f"/admin/recon/upload/{upload.pk}/errors.csv")
    assert csv_response["Content-Type"].startswith("text/csv")
    lines = csv_response.content.decode().splitlines()
    assert lines[0] == "row_number,error_details,amount,currency,order_id,transaction_date,type"
    assert lines[1].startswith("2,amount 'abc' is not a number") and len(lines) == 3


def test_currency_codes_in_any_case_over_the_api(operator_api, ledger):
    r = operator_api.post("/api/merchants/acme/accounts/", {"account_name": "x", "account_type": "DEBIT_NORMAL",
                                                            "currency": "eur"}, format="json")
    assert r.status_code == 201 and r.json()["currency"] == "EUR"
    r = operator_api.post(f"/api/accounts/{ledger.payments.pk}/staging-entries/",
                          {"entry_type": "DEBIT", "amount": "1.00", "currency": "usd", "effective_date": "2026-11-01",
                           "processing_mode": "TRANSACTION", "metadata": {"order_id": "lc"}}, format="json")
    assert r.status_code == 201 and r.json()["currency"] == "USD"
