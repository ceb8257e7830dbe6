"""The workflows console: a run's graph (server-side SVG) and steps, "Retry from this step", the declared
workflows, the analytics page, the settlement run's start form."""

import re

import pytest
from django.test import Client

from jobs import services
from jobs.models import WorkflowStep
from tests.jobs.conftest import drain, reload

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_web(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def boxes(html: str) -> dict[str, str]:
    return dict(re.findall(r'<g class="wf-step" data-step="([^"]+)" data-state="([^"]*)"', html))


def test_run_page_draws_the_graph_coloured_by_state_and_retries_from_a_step(admin_web):
    job = services.job_create(job_type="jobs.diamond", params={"fail_attempts": {"right": 1}, "max_attempts": 1})
    drain()
    assert reload(job).state == "FAILED"
    html = admin_web.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert "<svg" in html and html.count('class="wf-edge"') == 4  # four edges
    assert boxes(html) == {"start": "COMPLETED", "left": "COMPLETED", "right": "FAILED", "join": "PENDING"}
    assert "#c0392b" in html  # the FAILED box's colour
    assert "traceback" in html and "fails attempt 1 on purpose" in html
    ids = {s.name: s.pk for s in WorkflowStep.objects.filter(job_id=job.pk)}
    retry_urls = re.findall(r'formaction="/admin/jobs/workflowstep/(\d+)/retry/"', html)
    names = {v: k for k, v in ids.items()}
    assert sorted(names[int(u)] for u in retry_urls) == ["left", "right", "start"]  # join's parent FAILED
    fragment = admin_web.get(f"/admin/jobs/workflowstep/{ids['start']}/fragment/")
    assert fragment.status_code == 200 and boxes(fragment.content.decode())["right"] == "FAILED"

    resp = admin_web.post(f"/admin/jobs/workflowstep/{ids['right']}/retry/")
    assert resp.status_code == 302
    drain()
    assert reload(job).state == "COMPLETED"
    html = admin_web.get(f"/admin/jobs/job/{job.pk}/change/").content.decode()
    assert set(boxes(html).values()) == {"COMPLETED"} and "Retry from this step" not in html
    assert admin_web.post(f"/admin/jobs/workflowstep/{ids['right']}/retry/").status_code == 302
    assert WorkflowStep.objects.get(job_id=job.pk, name="right").attempts == 2  # refused: the run is not FAILED


def test_declared_workflows_and_analytics_pages(admin_web):
    html = admin_web.get("/admin/jobs/workflowstep/declared/").content.decode()
    assert "jobs.diamond" in html and "recon.settlement_run" in html and html.count("<svg") >= 3
    assert "/admin/jobs/workflowstep/start/recon.settlement_run/" in html
    services.job_create(job_type="test.permanent", params={})
    drain()
    html = admin_web.get("/admin/jobs/workflowstep/analytics/?hours=1&workflow=test.permanent").content.decode()
    assert re.search(r'id="wf-exhausted">1<', html)
    assert "test.permanent" in html and "<td>bad</td>" not in html  # FAILED steps have no duration row
    assert "<td>a</td>" in html
    assert admin_web.get("/admin/jobs/workflowstep/").status_code == 200
    non_workflow = services.job_create(job_type="jobs.countdown", params={"steps": 1})
    assert "wf-panel" not in admin_web.get(f"/admin/jobs/job/{non_workflow.pk}/change/").content.decode()
