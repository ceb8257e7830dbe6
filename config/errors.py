"""The project's base exception. Each app subclasses it once (TrackerError, ReconError, JobError)."""


class AppError(Exception):
    """Something went wrong."""

    code = "error"
    status = 400  # HTTP status the API answers with
    retryable = False  # for tracker handlers: retry the task or fail it

    def __init__(self, message: str | None = None, *, details: dict | None = None):
        self.message = message or (self.__doc__ or self.code).strip()
        self.details = details or {}
        super().__init__(self.message)


class Conflict(AppError):
    """The object is not in a state that allows this."""

    code = "conflict"
    status = 409


class IllegalTransition(Conflict):
    """This state transition is not allowed from the current state."""

    code = "illegal_transition"
