"""The task console in the admin."""

import pytest
from django.contrib.auth.models import Permission

from tracker import services
from tracker.models import ProcessTracker
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def viewer_client(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_processtracker"))
    client.force_login(user)
    return client


@pytest.fixture
def mixed():
    failed = services.task_create(task_type="test.permanent", payload={"order_id": "ORD-77"})
    Worker("w").drain(budget_seconds=5)
    pending = services.task_create(task_type="test.noop", payload={})
    return failed, pending


URL = "/admin/tracker/processtracker/"


def test_changelist_filters_and_searches(admin_client_, mixed):
    failed, pending = mixed
    page = admin_client_.get(URL).content.decode()
    assert str(failed.task_id) in page and str(pending.task_id) in page
    page = admin_client_.get(URL, {"status__exact": "FAILED"}).content.decode()
    assert str(failed.task_id) in page and str(pending.task_id) not in page
    page = admin_client_.get(URL, {"q": "ORD-77"}).content.decode()
    assert str(failed.task_id) in page and str(pending.task_id) not in page
    page = admin_client_.get(URL, {"q": str(pending.task_id)}).content.decode()
    assert str(pending.task_id) in page and str(failed.task_id) not in page


def test_detail_shows_payload_traceback_and_history(admin_client_, mixed):
    failed, _ = mixed
    page = admin_client_.get(f"{URL}{failed.task_id}/change/").content.decode()
    assert "ORD-77" in page and "Traceback" in page and "PROCESSING → FAILED" in page
    assert "_fsm_transition_to" in page and "operator_retry" in page


def test_retry_and_cancel_actions_report_skipped(admin_client_, mixed):
    failed, pending = mixed
    ids = [str(failed.task_id), str(pending.task_id)]
    response = admin_client_.post(URL, {"action": "retry_selected", "_selected_action": ids}, follow=True)
    assert "1 task(s) done, 1 skipped" in response.content.decode()
    assert ProcessTracker.objects.get(pk=failed.pk).status == "PENDING"
    response = admin_client_.post(URL, {"action": "cancel_selected", "_selected_action": ids}, follow=True)
    assert "2 task(s) done, 0 skipped" in response.content.decode()
    assert set(ProcessTracker.objects.values_list("status", flat=True)) == {"CANCELLED"}


def test_fsm_button_records_the_operator(admin_client_, mixed):
    failed, _ = mixed
    admin_client_.post(f"{URL}{failed.task_id}/change/", {"_fsm_transition_to": "operator_retry"})
    failed.refresh_from_db()
    assert failed.status == "PENDING" and failed.attempts == 0
    from tracker.audit import history

    assert history(failed)[-1].by == "staff"


def test_users_without_change_permission_cannot_retry(viewer_client, mixed):
    failed, _ = mixed
    assert viewer_client.get(URL).status_code == 200
    viewer_client.post(URL, {"action": "retry_selected", "_selected_action": [str(failed.task_id)]})
    viewer_client.post(f"{URL}{failed.task_id}/change/", {"_fsm_transition_to": "operator_retry"})
    assert ProcessTracker.objects.get(pk=failed.pk).status == "FAILED"
    page = viewer_client.get(f"{URL}{failed.task_id}/change/").content.decode()
    assert "operator_retry" not in page
