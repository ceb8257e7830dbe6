"""Merchant scoping for tasks, through the project's access policy (settings.TENANT_ACCESS)."""

from importlib import import_module

from django.conf import settings


def policy():
    return import_module(settings.TENANT_ACCESS)


def scope(queryset, user, field: str = "tenant"):
    """Rows of the tenants `user` may see (everything for staff)."""
    tenants = policy().visible_tenants(user)
    return queryset if tenants is None else queryset.filter(**{f"{field}__in": tenants})


def can_operate(user, tenant: str) -> bool:
    return policy().can_operate(user, tenant)


def operable_tenants(user) -> set[str] | None:
    """The tenants `user` may change (None: every tenant, for staff); empty for users who operate none."""
    if hasattr(policy(), "operable_tenants"):
        return policy().operable_tenants(user)
    tenants = policy().visible_tenants(user)
    if tenants is None:
        return None
    return {t for t in tenants if can_operate(user, t)}
