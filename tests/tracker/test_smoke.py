import pytest

from tracker.models import ProcessTracker


@pytest.mark.django_db
def test_database_is_postgres():
    from django.db import connection

    assert connection.vendor == "postgresql"
    assert ProcessTracker.objects.count() == 0
