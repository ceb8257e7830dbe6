"""Event streams on a real uvicorn worker hold no database connection: 100 open streams (the 1,000-stream flood is
in tests/reliability)."""

import pytest

from tests.jobs.streamflood import flood

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_100_open_streams_on_one_uvicorn_worker_keep_the_connection_count_flat(processes, staff_user):
    figures = flood(processes, staff_user, 100)
    assert figures["connections_with_streams_open"] <= figures["baseline_connections"] + 2
    assert figures["reopened"] == 100
