"""Admin building blocks shared by the apps' consoles."""

from django.contrib import admin
from django_fsm.admin import FSMAdminMixin


class AuditedFSMAdminMixin(FSMAdminMixin):
    """django-fsm-2's mixin passes `by=request.user` only when django-fsm-log is installed; the project
    keeps its own audit table, so pass it always (transition methods accept `by` and `reason`)."""

    def _execute_fsm_transition(self, *, transition_func, request, kwargs=None):
        transition_func(by=request.user, **(kwargs or {}))


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that change only through services (ledger tables, events): view only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
