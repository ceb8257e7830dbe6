"""The jobs console in the admin."""

import pytest
from django.test import Client

from jobs import services
from tests.jobs.conftest import drain, reload
from tracker.audit import history

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_web(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def test_job_list_shows_progress_bars_and_filters_by_state(admin_web):
    running = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    services.job_create(job_type="jobs.approval_demo", params={})
    resp = admin_web.get("/admin/jobs/job/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'class="job-bar"' in html and str(running.pk) in html
    resp = admin_web.get("/admin/jobs/job/?state__exact=CREATED&job_type=jobs.approval_demo")
    assert resp.status_code == 200 and str(running.pk) not in resp.content.decode()


def test_change_page_has_the_live_panel_and_signal_buttons_when_waiting(admin_web):
    job = services.job_create(job_type="jobs.approval_demo", params={})
    drain()
    resp = admin_web.get(f"/admin/jobs/job/{job.pk}/change/")
    assert resp.status_code == 200
    html = resp.content.decode()
    # The log replays every stored event from the stream (none is drawn from page-load time).
    assert f'data-events-url="/api/jobs/{job.pk}/events/?last_event_id=0"' in html and "jobs/job_page.js" in html
    assert '<ol id="job-log" aria-live="polite"></ol>' in html
    assert 'value="signal:approve"' in html and 'value="signal:reject"' in html
    assert "waiting" in html.lower()
    # One truth: the subtitle, panel and fields are server-rendered parts the page re-fetches.
    for part in ("subtitle", "panel", "fields", "inlines"):
        assert f'data-live-part="{part}"' in html
    assert 'value="cancel"' in html and 'value="pause"' not in html and 'value="retry"' not in html


def panel(html: str) -> str:
    return html.split('data-live-part="panel"', 1)[1].split('class="log-head"', 1)[0]


def test_change_page_parts_follow_the_job_state(admin_web):
    """Buttons are those the state allows, the step clears on completion, the Error section is open when failed."""
    import datetime as dt

    from jobs.models import Job

    job = services.job_create(job_type="jobs.countdown", params={"steps": 2, "step_seconds": 0})
    Job.objects.filter(pk=job.pk).update(state="RUNNING", started_at=dt.datetime.now(dt.UTC))
    html = admin_web.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert 'value="pause"' in panel(html) and 'value="cancel"' in panel(html)
    assert "[RUNNING]" in html.split('data-live-part="subtitle"', 1)[1].split("</div>", 1)[0]
    Job.objects.filter(pk=job.pk).update(state="CREATED")
    drain()
    job = reload(job)
    assert job.state == "COMPLETED" and job.progress == 100 and job.step == ""
    html = admin_web.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert '<span id="job-step">-</span>' in html and '<span id="job-progress">100</span>' in html
    assert 'value="' not in panel(html)  # nothing to do with a completed job
    assert 'data-terminal="1"' in html

    failed = services.job_create(job_type="jobs.countdown", params={"steps": 2, "step_seconds": 0, "fail_at": 1})
    drain()
    html = admin_web.get(f"/admin/jobs/job/{failed.pk}/change/").content.decode()
    assert 'value="retry"' in panel(html)
    error_section = html.split(">Error<", 1)[0].rsplit("<fieldset", 1)[1]
    assert "collapse" not in error_section and "<details" not in error_section
    html = admin_web.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert "<details" in html.split(">Error<", 1)[0].rsplit("<fieldset", 1)[1]  # collapsed when not failed


def test_the_job_page_log_shows_only_the_latest_stored_events_of_a_long_job(admin_web, monkeypatch):
    from jobs import admin as jobs_admin
    from jobs.models import JobEvent

    monkeypatch.setattr(jobs_admin, "LOG_EVENTS", 3)
    job = services.job_create(job_type="jobs.countdown", params={"steps": 3, "step_seconds": 0})
    drain()
    ids = list(JobEvent.objects.filter(job=job).order_by("id").values_list("id", flat=True))
    html = admin_web.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert f"/events/?last_event_id={ids[-4]}" in html
    assert f"{len(ids) - 3} earlier events not shown" in html


def test_watched_change_lists_refresh_themselves(admin_web):
    for url in ("/admin/jobs/job/", "/admin/tracker/processtracker/", "/admin/recon/stagingentry/"):
        html = admin_web.get(url).content.decode()
        assert 'id="live-refresh"' in html and "console/live_refresh.js" in html, url
    html = admin_web.get("/admin/jobs/jobevent/").content.decode()
    assert 'id="live-refresh"' not in html


def test_change_page_buttons_call_the_services_as_the_user(admin_web, staff_user):
    job = services.job_create(job_type="jobs.approval_demo", params={})
    drain()
    url = f"/admin/jobs/job/{job.pk}/act/"
    resp = admin_web.post(url, {"action": "signal:approve"})
    assert resp.status_code == 302
    assert reload(job).state == "RUNNING"
    assert history(job)[-1].by_user_id == staff_user.pk
    drain()
    assert reload(job).result["decision"] == "approve"
    resp = admin_web.post(url, {"action": "pause"}, follow=True)  # illegal now: a message, no change
    assert reload(job).state == "COMPLETED"
    assert "only RUNNING jobs" in resp.content.decode()
    assert admin_web.get(url).status_code == 405


def test_list_actions_report_done_and_skipped(admin_web):
    a = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    b = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    services.job_cancel(job_id=b.pk, by=None)
    resp = admin_web.post(
        "/admin/jobs/job/", {"action": "cancel_selected", "_selected_action": [a.pk, b.pk]}, follow=True
    )
    assert "1 job(s) cancelled; 1 skipped" in resp.content.decode()
    assert reload(a).state == "CANCELLED"


def test_event_admin_is_read_only(admin_web):
    job = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    resp = admin_web.get("/admin/jobs/jobevent/")
    assert resp.status_code == 200 and str(job.pk)[:8] in resp.content.decode()
    assert admin_web.get("/admin/jobs/jobevent/add/").status_code == 403


def test_search_by_id_or_merchant_accepts_any_text(admin_web):
    job = services.job_create(job_type="jobs.countdown", params={"steps": 1}, merchant_id="m-42")
    for q in ("not-a-uuid", str(job.pk), "m-42"):
        resp = admin_web.get("/admin/jobs/job/", {"q": q})
        assert resp.status_code == 200
        assert (str(job.pk) in resp.content.decode()) == (q != "not-a-uuid")
