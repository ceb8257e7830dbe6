"""The console opens in a real browser: the staff login leads to the operations console."""

from tests.browser.conftest import login, screenshot


def test_staff_logs_into_the_console(page, django_user_model):
    django_user_model.objects.create_user("ops", password="pw-ops-1", is_staff=True, is_superuser=True)
    login(page, "ops", "pw-ops-1")
    assert page.url.endswith("/admin/") and "login" not in page.url
    assert page.locator("#logout-form").count() == 1
    screenshot(page, "console-index-staff")


def test_wrong_password_is_refused(page, django_user_model):
    django_user_model.objects.create_user("ops", password="pw-ops-1", is_staff=True)
    login(page, "ops", "wrong")
    assert "/admin/login/" in page.url
    assert page.locator(".errornote").count() == 1
