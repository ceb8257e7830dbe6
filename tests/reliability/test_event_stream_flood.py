"""A flood of event streams (issue 17): 1,000 open SSE streams on one uvicorn worker with the test database's
connection count flat, every stream getting every event once, and closed streams freeing their slots at once."""

import pytest

from tests.jobs.streamflood import flood

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


def test_1000_open_streams_on_one_uvicorn_worker_keep_the_connection_count_flat(processes, staff_user):
    figures = flood(processes, staff_user, 1000)
    assert figures["connections_with_streams_open"] <= figures["baseline_connections"] + 2
    assert figures["reopened"] == 1000
