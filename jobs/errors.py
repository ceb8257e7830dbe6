"""Jobs errors: one base (`JobError`) under the project's `AppError`; each subclass has a code, an HTTP status
and a docstring that is its default message."""

from config.errors import AppError, IllegalTransition


class JobError(AppError):
    """Job error."""

    code = "job_error"


class JobNotFound(JobError):
    """Job not found."""

    code = "not_found"
    status = 404


class UnknownJobType(JobError):
    """Unknown job type."""

    code = "unknown_job_type"
    status = 400


class InvalidJobParams(JobError):
    """Invalid job parameters."""

    code = "validation_error"
    status = 400


class JobStateConflict(JobError, IllegalTransition):
    """The job is not in a state that allows this."""

    code = "illegal_transition"
    status = 409


class JobTypeForbidden(JobError):
    """Only staff may start this job type."""

    code = "permission_denied"
    status = 403


class PersonalJobLimit(JobError):
    """Too many unfinished personal jobs; wait for one to finish or cancel one."""

    code = "throttled"
    status = 429


class JobRunSuperseded(JobError):
    """This run no longer owns the job (its tracker task was rescued or finished); its writes roll back."""

    code = "job_run_superseded"
    retryable = False


class TooManyStreams(JobError):
    """Too many open event streams."""

    code = "too_many_streams"
    status = 429


class JobRunFailed(JobError):
    """The job failed in this run; its JOB_RUN task fails with it (not retried: an operator retries the job)."""

    code = "job_failed"
    retryable = False


class IdempotencyConflict(JobError):
    """This idempotency key was used for a different request."""

    code = "idempotency_conflict"
    status = 409
