"""Selecting tasks by id or by filter, shared by tracker_retry and tracker_cancel."""

import uuid

from django.core.management.base import CommandError

from tracker import services
from tracker.errors import InvalidBulkRequest
from tracker.models import ProcessTracker, TaskStatus


def add_selection_arguments(parser) -> None:
    parser.add_argument("task_ids", nargs="*", help="Task ids.")
    parser.add_argument("--status", choices=TaskStatus.values, help="Every task in this status.")
    parser.add_argument("--type", dest="task_type", help="Every task of this type.")
    parser.add_argument("--dry-run", action="store_true", help="Say what would change; change nothing.")


def act(command, options, action: str) -> None:
    """By ids: those tasks (`task_act_many`). By --status/--type: every matching task, in chunks, through the
    bulk service the API's and the admin's bulk jobs use (`task_bulk_run`)."""
    if not options["task_ids"] and not (options["status"] or options["task_type"]):
        raise CommandError("Give task ids, or --status and/or --type.")
    verb = "would " + action if options["dry_run"] else {"retry": "retried", "cancel": "cancelled"}[action]
    if not options["task_ids"]:
        try:
            result = services.task_bulk_run(action=action, filter={"status": options["status"],
                                                                   "task_type": options["task_type"]},
                                            by="command line", dry_run=options["dry_run"])
        except InvalidBulkRequest as exc:
            raise CommandError(exc.message) from None
        command.stdout.write(f"{verb}: {result['changed']}, skipped (not in a legal state): {result['skipped']}")
        return
    try:
        qs = ProcessTracker.objects.filter(task_id__in=[uuid.UUID(t) for t in options["task_ids"]])
    except ValueError as exc:
        raise CommandError(f"Not a task id: {exc}") from None
    missing = len(set(options["task_ids"])) - qs.count()
    if missing:
        command.stderr.write(f"{missing} of the given ids do not exist.")
    if options["status"]:
        qs = qs.filter(status=options["status"])
    if options["task_type"]:
        qs = qs.filter(task_type=options["task_type"])
    done, skipped = services.task_act_many(queryset=qs, action=action, dry_run=options["dry_run"],
                                           by="command line")
    command.stdout.write(f"{verb}: {done}, skipped (not in a legal state): {skipped}")
