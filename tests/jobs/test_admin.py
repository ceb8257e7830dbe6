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
    assert f'data-events-url="/api/jobs/{job.pk}/events/"' in html and "new EventSource" in html
    assert 'value="signal:approve"' in html and 'value="signal:reject"' in html
    assert "waiting" in html.lower()


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
    resp = admin_web.post("/admin/jobs/job/", {"action": "cancel_selected", "_selected_action": [a.pk, b.pk]},
                          follow=True)
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
