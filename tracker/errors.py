"""Tracker errors. Retryable vs permanent is a property of the class (`retryable`)."""

from config.errors import AppError, Conflict

# How much of an error is kept: a failed task's `last_error` (the message) and `error_details` (the end of the
# traceback, where the cause is), and the text of an error in a log line or a health answer.
ERROR_MESSAGE_CHARS = 2000
ERROR_DETAILS_CHARS = 20000
LOG_ERROR_CHARS = 200


def brief(exc: BaseException) -> str:
    """An exception's text, stripped and cut to LOG_ERROR_CHARS (for logs: database errors can be long)."""
    return str(exc).strip()[:LOG_ERROR_CHARS]


class TrackerError(AppError):
    """Task ledger error."""

    code = "tracker_error"


class RetryableError(TrackerError):
    """A temporary failure: the task is retried with backoff until its attempts run out."""

    code = "retryable_error"
    retryable = True


class PermanentError(TrackerError):
    """A failure that retrying cannot fix: the task fails at once."""

    code = "permanent_error"
    retryable = False


class UnknownTaskType(PermanentError):
    """No handler is registered for this task type."""

    code = "unknown_task_type"


class LeaseLost(TrackerError):
    """This worker no longer holds the task (its lease expired and it was rescued); its writes roll back."""

    code = "lease_lost"
    retryable = True


class TaskNotFound(TrackerError):
    """Task not found."""

    code = "not_found"
    status = 404


class TaskStateConflict(Conflict):
    """The task is not in a state that allows this."""

    code = "illegal_transition"


class InvalidBulkRequest(TrackerError):
    """The bulk action or its filter is not valid."""

    code = "invalid_bulk_request"
    status = 400


def is_retryable(exc: BaseException) -> bool:
    """Errors say whether they are retryable; unknown exceptions are retryable until attempts run out."""
    return getattr(exc, "retryable", True)
