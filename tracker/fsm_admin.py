"""FSM buttons in the admin that record the acting user in the audit trail."""

from django_fsm.admin import FSMAdminMixin


class AuditedFSMAdminMixin(FSMAdminMixin):
    """django-fsm-2's mixin passes `by=request.user` only when django-fsm-log is installed; the project
    keeps its own audit table, so pass it always (transition methods accept `by` and `reason`)."""

    def _execute_fsm_transition(self, *, transition_func, request, kwargs=None):
        transition_func(by=request.user, reason=f"admin: {transition_func.__name__.replace('_', ' ')}",
                        **(kwargs or {}))
