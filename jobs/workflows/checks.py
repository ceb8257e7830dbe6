"""Start-up check of workflows: with `check --database`, no unfinished run uses a version that is no longer
declared (a bad declaration already stops the start-up in JobsConfig.ready)."""

from django.core import checks


def connect() -> None:
    """Installs the check (from JobsConfig.ready)."""
    checks.register(workflow_versions_of_unfinished_runs, checks.Tags.database)


def workflow_versions_of_unfinished_runs(app_configs=None, **kwargs):
    from django.db import DatabaseError

    from jobs.models import ACTIVE_STATES, Job, JobState
    from jobs.workflows import declare

    errors = []
    try:
        pairs = set(
            Job.objects.filter(workflow_version__isnull=False, state__in=[*ACTIVE_STATES, JobState.FAILED])
            .values_list("job_type", "workflow_version")
            .distinct()
        )
    except DatabaseError:
        return []
    for name, version in sorted(pairs):
        if declare.get_version(name, version) is None:
            errors.append(
                checks.Error(
                    f"Unfinished runs of workflow {name!r} use version {version}, which is not declared.",
                    id="jobs.E002",
                    hint="Keep that version declared until its runs finish (docs/workflows.md).",
                )
            )
    return errors
