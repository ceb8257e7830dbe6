"""Start-up checks of workflows: every declaration loads (a cycle, an unknown parent or a duplicate step name
stops `runserver`, `migrate` and `qcluster` with the declaration's message), and, with `check --database`, no
unfinished run uses a version that is no longer declared."""

from django.core import checks


@checks.register()
def workflow_declarations(app_configs=None, **kwargs):
    from jobs import registry
    from jobs.workflows.declare import WorkflowDeclarationError

    try:
        registry.all_types()
    except WorkflowDeclarationError as exc:
        return [checks.Error(str(exc), id="jobs.E001", hint="Fix the workflow's steps (see docs/workflows.md).")]
    return []


@checks.register(checks.Tags.database)
def workflow_versions_of_unfinished_runs(app_configs=None, **kwargs):
    from django.db import DatabaseError

    from jobs.models import ACTIVE_STATES, Job, JobState
    from jobs.workflows import declare

    errors = []
    try:
        pairs = set(Job.objects.filter(workflow_version__isnull=False, state__in=[*ACTIVE_STATES, JobState.FAILED])
                    .values_list("job_type", "workflow_version").distinct())
    except DatabaseError:
        return []
    declare.all_workflows()
    for name, version in sorted(pairs):
        if declare.get_version(name, version) is None:
            errors.append(checks.Error(f"Unfinished runs of workflow {name!r} use version {version}, which is not "
                                       "declared.", id="jobs.E002",
                                       hint="Keep that version declared until its runs finish (docs/workflows.md)."))
    return errors
