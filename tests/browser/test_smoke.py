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


def test_workflow_graphs_fit_their_panel(page, django_user_model):
    """The settlement run's graph (five columns, wider than the content area at 1280 px) is scaled to fit, not cut."""
    django_user_model.objects.create_user("ops", password="pw-ops-1", is_staff=True, is_superuser=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    login(page, "ops", "pw-ops-1")
    page.goto("/admin/jobs/workflowstep/declared/")
    graphs = page.locator("svg.workflow-graph")
    assert graphs.count() >= 2
    for i in range(graphs.count()):
        graph, frame = graphs.nth(i).bounding_box(), graphs.nth(i).locator("xpath=..").bounding_box()
        assert graph["width"] > 0 and graph["x"] + graph["width"] <= frame["x"] + frame["width"] + 1
    screenshot(page, "workflows-declared")
