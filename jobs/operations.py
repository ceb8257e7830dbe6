"""Job types that operate the tracker: bulk retry/cancel of everything a filter matches (shared/API.md,
`POST /api/tasks/bulk/`). The work is tracker.services' chunked bulk service; this module makes it a job (progress,
checkpoint after every chunk, pause/cancel between chunks)."""

from django.contrib.auth import get_user_model
from django.db import transaction
from rest_framework import serializers

from jobs.registry import job_type
from jobs.runtime import JobContext
from tracker import access
from tracker import services as tracker_services

BULK_TASKS = "tracker.bulk_tasks"


class BulkTasksParams(serializers.Serializer):
    action = serializers.ChoiceField(choices=tracker_services.BULK_ACTIONS)
    filter = serializers.DictField()
    dry_run = serializers.BooleanField(default=False)

    def validate(self, attrs):
        from tracker.errors import InvalidBulkRequest

        try:
            attrs["filter"] = tracker_services.task_bulk_clean(action=attrs["action"], filter=attrs["filter"])
        except InvalidBulkRequest as exc:
            raise serializers.ValidationError({"filter": [exc.message]}) from None
        return attrs


@job_type(BULK_TASKS, params=BulkTasksParams)
def bulk_tasks(ctx: JobContext, params: dict) -> dict | None:
    """Retries or cancels every task the filter matches, in chunks, as the job's owner (limited to the merchants
    the owner operates, decided at run time from the owner, never from the params)."""
    owner = get_user_model().objects.filter(pk=ctx.owner_id).first() if ctx.owner_id else None
    if owner is None:
        raise PermissionError("A bulk action runs as its owner; this job has none.")
    tenants = access.operable_tenants(owner)
    action, flt, dry_run = params["action"], params["filter"], params["dry_run"]
    state = dict(ctx.checkpoint_data)
    if "matched" not in state:
        matched = tracker_services.task_bulk_count(filter=flt, tenants=tenants)
        legal = tracker_services.task_bulk_count(
            filter=flt, tenants=tenants, statuses=tracker_services.BULK_LEGAL[action]
        )
        state = {"matched": matched, "legal": legal, "changed": 0, "after": None}
        with transaction.atomic():
            ctx.log(
                f"bulk {action}{' (dry run)' if dry_run else ''}: {matched} matching, {legal} in a legal state",
                matched=matched,
                legal=legal,
            )
            ctx.checkpoint(state)
    reason = f"bulk {action} by {owner.get_username()} (job {ctx.job_id})"
    while True:
        if ctx.should_stop():
            return None
        with transaction.atomic():
            step = tracker_services.task_bulk_chunk(
                action=action,
                filter=flt,
                tenants=tenants,
                after=state["after"],
                limit=tracker_services.BULK_CHUNK,
                by=owner,
                reason=reason,
                dry_run=dry_run,
            )
            state = {**state, "changed": state["changed"] + step["changed"], "after": step["after"]}
            ctx.checkpoint(state)
        ctx.progress(
            100 * state["changed"] // max(1, state["legal"]) if step["after"] else 100,
            f"{state['changed']} of {state['legal']} {'would change' if dry_run else 'changed'}",
        )
        if step["after"] is None:
            break
    result = {
        "matched": state["matched"],
        "changed": state["changed"],
        "skipped": max(0, state["matched"] - state["changed"]),
    }
    if dry_run:
        result["dry_run"] = True
    return result


def bulk_tasks_start(*, action: str, filter, dry_run: bool = False, user):
    """Validates the bulk request (InvalidBulkRequest: 400) and starts its job, owned by `user` (a personal job:
    the owner sees and controls it). The caller has checked that `user` operates some merchant."""
    from jobs import services as job_services

    clean = tracker_services.task_bulk_clean(action=action, filter=filter)
    return job_services.job_create(
        job_type=BULK_TASKS, owner=user, params={"action": action, "filter": clean, "dry_run": bool(dry_run)}
    )


def jobs_referring_to(value: str) -> list[str]:
    """Ids of the jobs whose params carry `value` as an upload id (the task search's expander: pasting an upload id
    finds its import job's tasks). The jobs table is small next to the task table; at most 50 jobs."""
    from jobs.models import Job

    return [str(pk) for pk in Job.objects.filter(params__upload_id=value).values_list("pk", flat=True)[:50]]
