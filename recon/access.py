"""Who sees and changes which merchant's data. Tracker and jobs use this through settings.TENANT_ACCESS,
so they stay free of recon imports. A tenant is a merchant id (string)."""


def visible_tenants(user) -> set[str] | None:
    """None means every tenant (staff); otherwise the merchant ids the user is linked to."""
    if user is None or not user.is_authenticated:
        return set()
    if user.is_staff:
        return None
    return set()  # filled in by recon's merchant memberships


def can_operate(user, tenant: str) -> bool:
    """Staff, or a user with the operator role for this merchant."""
    return bool(user and user.is_authenticated and user.is_staff)
