"""Errors that can never succeed on retry end the entry in review with a reason, once, instead of ten retries."""

import pytest
from django.db import connection

from recon.models import StagingEntry, Transaction
from tests.recon.factories import stage
from tracker.models import ProcessTracker
from tracker.worker import Worker

pytestmark = pytest.mark.django_db


def test_too_long_match_key_value_goes_to_review_without_retries(ledger):
    # Every door refuses such a value now (recon.validation, issue 17 item 4); an entry stored before that limit
    # still ends in review.
    entry = stage(ledger.payments, order_id="x")
    StagingEntry.objects.filter(pk=entry.pk).update(metadata={"order_id": "x" * 300})
    totals = Worker("w").drain(budget_seconds=20)
    entry.refresh_from_db()
    assert (totals.succeeded, totals.failed) == (1, 0)
    assert entry.status == "NEEDS_MANUAL_REVIEW" and entry.metadata["error_type"] == "InvalidValueError"
    assert ProcessTracker.objects.get(pk=entry.task_id).attempts == 1
    assert not Transaction.objects.exists()


def test_a_value_the_database_rejects_ends_in_review(ledger):
    """A column limit the engine does not know of (here a trigger raising PostgreSQL's string_data_right_truncation
    for one key value): the batch falls back to batches of one, and that entry ends in review with the database's
    message while the others are processed."""
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE FUNCTION test_reject() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.logical_transaction_id LIKE '%:too-long' THEN
                    RAISE EXCEPTION 'value too long for type character varying(8)' USING ERRCODE = '22001';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_reject BEFORE INSERT ON recon_transaction FOR EACH ROW EXECUTE FUNCTION test_reject();
        """)
    bad = stage(ledger.payments, order_id="too-long")
    good = [stage(ledger.payments, order_id=f"ok{i}") for i in range(3)]
    totals = Worker("w").drain(budget_seconds=20)
    assert (totals.succeeded, totals.failed) == (4, 0)
    bad.refresh_from_db()
    assert bad.status == "NEEDS_MANUAL_REVIEW" and bad.metadata["error_type"] == "InvalidValueError"
    assert "value too long" in bad.metadata["error"]
    assert ProcessTracker.objects.get(pk=bad.task_id).attempts == 1
    assert StagingEntry.objects.filter(pk__in=[g.pk for g in good], status="PROCESSED").count() == 3
    assert Transaction.objects.count() == 3
