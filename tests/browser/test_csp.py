"""The Content-Security-Policy (issue 17, item 10) breaks nothing: the console pages and Swagger UI run in
Chromium with no CSP violation reported, and Swagger UI renders the schema."""

from tests.browser.conftest import login, screenshot


def test_console_and_swagger_ui_run_under_the_csp(page, django_user_model):
    from jobs import services
    from tests.recon.factories import AccountFactory, MerchantFactory

    django_user_model.objects.create_user("ops", password="pw-ops-1", is_staff=True, is_superuser=True)
    account = AccountFactory(merchant=MerchantFactory(merchant_id="acme"))
    job = services.job_create(job_type="recon.close_period", merchant_id="acme",
                              params={"merchant_id": "acme", "start_date": "2026-01-01", "end_date": "2026-01-31"})
    violations = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    login(page, "ops", "pw-ops-1")
    pages = ["/admin/", "/admin/recon/stagingentry/", f"/admin/recon/account/{account.pk}/change/",
             f"/admin/recon/account/{account.pk}/import-csv/", f"/admin/jobs/job/{job.pk}/change/",
             "/admin/tracker/processtracker/", "/admin/auth/user/add/"]
    for path in pages:
        resp = page.goto(path)
        assert resp.status == 200, path
        assert "script-src" in resp.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")
    page.goto("/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
    assert "Recon ledger API" in page.inner_text(".swagger-ui .info .title")
    assert page.locator(".opblock").count() > 10
    screenshot(page, "swagger-ui-under-csp")
    assert violations == []
