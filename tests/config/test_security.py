"""Secure by default (issue 17, item 10): settings from the environment, one JSON error shape under /api/, a
Content-Security-Policy the console and Swagger UI pass, a public health endpoint without host names."""

import json
import os
import re
import subprocess
import sys

import pytest
from django.test import Client

from tests.conftest import ROOT

DEPLOY_ENV = {
    "DJANGO_SECRET_KEY": "k" * 20 + "9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c7b6a5",
    "DJANGO_SECURE_SSL_REDIRECT": "1", "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "1", "DJANGO_SECURE_HSTS_PRELOAD": "1",
    "DJANGO_SESSION_COOKIE_SECURE": "1", "DJANGO_CSRF_COOKIE_SECURE": "1", "DJANGO_ALLOWED_HOSTS": "recon.example",
}


def _manage(*args, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=120)


def _setting(name: str, **env) -> str:
    code = f"import django; django.setup(); from django.conf import settings; print(repr(settings.{name}))"
    base = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env})
    return proc.stdout.strip() or proc.stderr.strip().splitlines()[-1]


def test_no_default_secret_and_debug_off_unless_set():
    assert "ImproperlyConfigured" in _setting("SECRET_KEY")
    assert _setting("DEBUG", DJANGO_SECRET_KEY="x" * 50) == "False"
    assert _setting("DEBUG", DJANGO_SECRET_KEY="x" * 50, DJANGO_DEBUG="1") == "True"
    # TLS usually ends at a proxy: redirects, HSTS and secure-only cookies are off unless set.
    assert _setting("SECURE_SSL_REDIRECT", DJANGO_SECRET_KEY="x" * 50) == "False"
    assert _setting("SESSION_COOKIE_SECURE", DJANGO_SECRET_KEY="x" * 50) == "False"


def test_check_deploy_is_clean_with_every_setting_from_the_environment():
    proc = _manage("check", "--deploy", "--fail-level", "WARNING", **DEPLOY_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Without them, the warnings name exactly the settings the environment can set.
    proc = _manage("check", "--deploy", DJANGO_SECRET_KEY=DEPLOY_ENV["DJANGO_SECRET_KEY"])
    for warning in ("W004", "W008", "W012", "W016"):
        assert warning in proc.stderr + proc.stdout


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/nope/", "/api/nope", "/api/merchants/x/nope/", "/api/jobs/1/2/3/"])
def test_unknown_api_paths_answer_the_json_error_shape(staff_api, path):
    resp = staff_api.get(path)
    assert resp.status_code == 404
    assert resp.json() == {"error": "Not found.", "code": "not_found", "details": {}}


@pytest.mark.django_db
def test_bad_host_under_api_answers_json():
    resp = Client(HTTP_HOST="evil.example").get("/api/health/")
    assert resp.status_code == 400
    assert resp["Content-Type"] == "application/json"
    assert resp.json()["code"] == "bad_request"


@pytest.mark.django_db
def test_a_500_under_api_answers_json(staff_user, monkeypatch):
    from tracker import api

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(api.HealthView, "get", boom)
    client = Client(raise_request_exception=False)
    resp = client.get("/api/health/")
    assert resp.status_code == 500
    assert resp.json() == {"error": "Internal server error.", "code": "server_error", "details": {}}
    assert "boom" not in resp.content.decode()


@pytest.mark.django_db
def test_health_hides_worker_ids_and_errors_from_the_public(anon_api, staff_api):
    from tracker.models import WorkerHeartbeat

    WorkerHeartbeat.objects.create(slot=0, worker_id="db-host-7:4242")
    public = anon_api.get("/api/health/")
    assert public.status_code == 200
    assert "db-host-7" not in public.content.decode() and "4242" not in public.content.decode()
    assert public.json()["cluster"]["heartbeats"][0]["slot"] == 0
    assert staff_api.get("/api/health/").json()["cluster"]["heartbeats"][0]["worker_id"] == "db-host-7:4242"


def _inline_scripts(html: str) -> list[str]:
    """<script> tags with inline code and no nonce (a JSON data block is not code)."""
    bad = []
    for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S):
        if "src=" in attrs or "application/json" in attrs or not body.strip():
            continue
        if "nonce=" not in attrs:
            bad.append(attrs + body[:80])
    return bad


@pytest.mark.django_db
def test_csp_is_sent_and_the_console_and_swagger_pass_it(staff_user):
    from tests.recon.factories import AccountFactory, MerchantFactory

    client = Client()
    client.force_login(staff_user)
    account = AccountFactory(merchant=MerchantFactory(merchant_id="acme"))
    from jobs import services

    job = services.job_create(job_type="recon.close_period", merchant_id="acme",
                              params={"merchant_id": "acme", "start_date": "2026-01-01", "end_date": "2026-01-31"})
    pages = ["/admin/", "/admin/recon/stagingentry/", f"/admin/recon/account/{account.pk}/change/",
             f"/admin/recon/account/{account.pk}/import-csv/", f"/admin/jobs/job/{job.pk}/change/",
             "/admin/tracker/processtracker/", "/api/docs/"]
    for page in pages:
        resp = client.get(page)
        assert resp.status_code == 200, page
        policy = resp["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
        html = resp.content.decode()
        assert _inline_scripts(html) == [], page
        for nonce in re.findall(r'nonce="([^"]+)"', html):
            assert f"'nonce-{nonce}'" in policy, page
    # Swagger UI's init script is a file of its own (same origin).
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()
