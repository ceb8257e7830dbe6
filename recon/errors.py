"""Recon errors. Engine outcome errors (subclasses of `OutcomeError`) are recorded on the staging entry
(NEEDS_MANUAL_REVIEW with metadata `error` / `error_type`) and the tracker task still completes; any other
exception propagates so the tracker retries the task."""

from config.errors import AppError, Conflict


class ReconError(AppError):
    """Reconciliation error."""

    code = "recon_error"

    @property
    def error_type(self) -> str:
        return type(self).__name__


class NotFoundError(ReconError):
    """Not found."""

    code = "not_found"
    status = 404


class ReconConflict(Conflict, ReconError):
    """The object is not in a state that allows this."""

    code = "conflict"
    status = 409


class IllegalStateError(ReconConflict):
    """This action is not allowed in the object's current state."""

    code = "illegal_transition"


class IdempotencyConflictError(ReconConflict):
    """This idempotency key was already used with a different request body."""

    code = "idempotency_conflict"


class AccountInUseError(ReconConflict):
    """The account has ledger entries or staging entries and cannot be deleted."""

    code = "account_in_use"


class AccountHasEntriesError(ReconConflict):
    """The account has entries: its currency, type and opening balance can no longer change."""

    code = "account_has_entries"


class PeriodHasOpenEntriesError(ReconConflict):
    """Entries dated in the period are still in the review queue or PENDING."""

    code = "period_has_open_entries"


class WriteOffNotAllowed(ReconError):
    """Booking a difference as a write-off needs the recon.write_off permission."""

    code = "permission_denied"
    status = 403


class PeriodClosedConflict(ReconConflict):
    """The entry's date lies in a closed period."""

    code = "period_closed"


class UnprocessableError(ReconError):
    """The request is well-formed but cannot be processed."""

    code = "unprocessable"
    status = 422


# --- engine outcomes (recorded on the staging entry) ------------------------------------------------

class OutsideToleranceError(UnprocessableError):
    """The amounts differ beyond the rule's tolerance."""

    code = "outside_tolerance"


class OutcomeError(ReconError):
    """The staging entry needs manual review."""

    code = "needs_manual_review"
    status = 422


class NoReconRuleFoundError(OutcomeError):
    """No recon rule applies to this account."""

    code = "no_recon_rule"


class NoMatchFoundError(OutcomeError):
    """No expected entry matches this confirmation."""

    code = "no_match"


class AmbiguousMatchError(OutcomeError):
    """More than one expected entry matches this confirmation."""

    code = "ambiguous_match"


class MismatchError(OutcomeError):
    """The expected entry does not agree with this confirmation."""

    code = "mismatch"


class CurrencyMismatchError(OutcomeError):
    """The entry's currency differs from its account's currency."""

    code = "currency_mismatch"


class DuplicateTransactionError(OutcomeError):
    """An open transaction already exists for this account and match key value."""

    code = "duplicate_transaction"


class UnbalancedTransactionError(OutcomeError):
    """The resulting transaction would not balance."""

    code = "unbalanced_transaction"


class InvalidValueError(OutcomeError):
    """A value of the entry cannot be stored (too long for its column, out of range): retrying cannot help."""

    code = "invalid_value"


class PeriodClosedError(OutcomeError):
    """The entry's effective date lies in a closed period."""

    code = "period_closed"
