"""Job types' schema_version: an older checkpoint is upgraded by the type's `upgrade`, or refused clearly."""

import pytest

from jobs import services
from jobs.models import Job
from jobs.registry import job_type, register
from tests.jobs.conftest import drain, reload

pytestmark = pytest.mark.django_db(transaction=True)


@job_type("test.schema_upgrade", schema_version=2, upgrade=lambda cp, v: {"count": cp["n"]} if v == 1 else cp)
def with_upgrade(ctx, params):
    return {"count": ctx.checkpoint_data.get("count"), "schema": ctx.schema_version}


register(with_upgrade)


@job_type("test.schema_no_upgrade", schema_version=2)
def without_upgrade(ctx, params):
    return {"checkpoint": ctx.checkpoint_data}


register(without_upgrade)


def old_job(job_type: str) -> Job:
    job = services.job_create(job_type=job_type, params={})
    assert job.schema_version == 2
    Job.objects.filter(pk=job.pk).update(schema_version=1, checkpoint={"n": 7})
    return job


def test_an_older_checkpoint_is_upgraded():
    job = old_job("test.schema_upgrade")
    drain()
    job = reload(job)
    assert job.state == "COMPLETED" and job.result == {"count": 7, "schema": 2} and job.schema_version == 2


def test_an_older_checkpoint_without_upgrade_is_refused_and_a_retry_from_start_runs():
    job = old_job("test.schema_no_upgrade")
    drain()
    job = reload(job)
    assert job.state == "FAILED"
    assert "schema version 1" in job.error and "no upgrade" in job.error
    services.job_retry(job_id=job.pk, from_start=True)
    drain()
    assert reload(job).state == "COMPLETED" and reload(job).result == {"checkpoint": {}}


def test_a_newer_checkpoint_is_refused():
    job = services.job_create(job_type="test.schema_no_upgrade", params={})
    Job.objects.filter(pk=job.pk).update(schema_version=3)
    drain()
    assert reload(job).state == "FAILED" and "newer" in reload(job).error
