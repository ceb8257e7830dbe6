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
