"""Who sees and changes which merchant's data. Tracker and jobs use this through settings.TENANT_ACCESS,
so they stay free of recon imports. A tenant is a merchant id (string)."""


def visible_tenants(user) -> set[str] | None:
    """None means every tenant (staff); otherwise the merchant ids the user is linked to."""
    if user is None or not user.is_authenticated:
        return set()
    if user.is_staff:
        return None
    from recon.models import MerchantMembership

    return set(MerchantMembership.objects.filter(user=user).values_list("merchant_id", flat=True))


def operable_tenants(user) -> set[str] | None:
    """None means every tenant (staff); otherwise the merchant ids the user is an operator of."""
    if user is None or not user.is_authenticated:
        return set()
    if user.is_staff:
        return None
    from recon.models import MerchantMembership, Role

    return set(MerchantMembership.objects.filter(user=user, role=Role.OPERATOR).values_list("merchant_id", flat=True))


def can_operate(user, tenant: str) -> bool:
    """Staff, or a user with the operator role for this merchant."""
    if user is None or not user.is_authenticated:
        return False
    if user.is_staff:
        return True
    from recon.models import MerchantMembership, Role

    return MerchantMembership.objects.filter(user=user, merchant_id=str(tenant), role=Role.OPERATOR).exists()


def can_see(user, tenant: str) -> bool:
    """Staff, or a user linked to this merchant with any role."""
    tenants = visible_tenants(user)
    return tenants is None or str(tenant) in tenants
