"""Merchant teams in the console, in a real browser (issue 12, items 6 and 8): staff see every merchant; a
merchant operator logs in at the same address, sees only their merchant's data and pages, and another merchant's
objects answer 404."""

import pytest

from recon.models import MerchantMembership, StagingEntry
from tests.browser.conftest import login, screenshot
from tests.recon.factories import AccountFactory, MerchantFactory, stage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_merchants(django_user_model):
    alpha = MerchantFactory(merchant_id="alpha-co", merchant_name="Alpha Company")
    beta = MerchantFactory(merchant_id="beta-co", merchant_name="Beta Company")
    entries = {}
    for merchant, name in ((alpha, "Alpha"), (beta, "Beta")):
        account = AccountFactory(merchant=merchant, account_name=f"{name} Payments")
        entries[name] = stage(account, order_id=f"{name.lower()}-order-1")
    django_user_model.objects.create_user("ops", password="pw-ops-1", is_staff=True, is_superuser=True)
    operator = django_user_model.objects.create_user("alpha_op", password="pw-alpha-1")
    MerchantMembership.objects.create(user=operator, merchant=alpha, role="operator")
    return entries


def test_staff_see_every_merchant(page, two_merchants):
    login(page, "ops", "pw-ops-1")
    page.goto("/admin/recon/stagingentry/")
    text = page.locator("#result_list").inner_text()
    assert "Alpha Payments" in text and "Beta Payments" in text
    screenshot(page, "console-staff-staging-entries-both-merchants")


def test_merchant_operator_sees_only_their_merchant_and_others_objects_are_404(page, two_merchants):
    login(page, "alpha_op", "pw-alpha-1")
    assert page.url.endswith("/admin/"), page.url  # admitted: no "staff account" refusal
    index = page.locator("#content-main").inner_text()
    assert "Staging entries" in index and "Jobs" in index
    assert "Users" not in index and "Merchant memberships" not in index and "Worker heartbeats" not in index
    screenshot(page, "console-merchant-operator-index")

    page.goto("/admin/recon/stagingentry/")
    text = page.locator("#result_list").inner_text()
    assert "Alpha Payments" in text and "Beta" not in page.content()
    screenshot(page, "console-merchant-operator-staging-entries")

    own = StagingEntry.objects.get(account__merchant_id="alpha-co")
    response = page.goto(f"/admin/recon/stagingentry/{own.pk}/change/")
    assert response.status == 200 and "alpha-order-1" in page.content()
    screenshot(page, "console-merchant-operator-own-entry")

    other = two_merchants["Beta"]
    response = page.goto(f"/admin/recon/stagingentry/{other.pk}/change/")
    assert response.status == 404 and "beta-order-1" not in page.content()
    screenshot(page, "console-merchant-operator-other-merchant-404")
    assert page.goto("/admin/auth/user/").status == 403
