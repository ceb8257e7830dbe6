"""Helpers shared by the jobs commands."""

import json
import uuid

from django.core.management.base import CommandError

from jobs.models import Job

BY = "command line"


def get_job(job_id: str) -> Job:
    try:
        return Job.objects.get(pk=uuid.UUID(str(job_id)))
    except (ValueError, Job.DoesNotExist):
        raise CommandError(f"No job {job_id!r}.") from None


def parse_value(text: str):
    """`5` -> 5, `true` -> True, `{"a": 1}` -> dict, anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_json(text: str | None, what: str):
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{what} is not valid JSON: {exc}") from None
