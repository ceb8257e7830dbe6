"""Tenant policy for the jobs tests (settings.TENANT_ACCESS): a user named `<role>_<merchant>` is linked to
`<merchant>` with that role (viewer or operator); staff see and operate everything."""


def _link(user):
    if not user or not user.is_authenticated or "_" not in user.username:
        return None, None
    role, merchant = user.username.split("_", 1)
    return role, merchant


def visible_tenants(user):
    if user is None or not user.is_authenticated:
        return set()
    if user.is_staff:
        return None
    role, merchant = _link(user)
    return {merchant} if merchant else set()


def can_operate(user, tenant):
    if user is None or not user.is_authenticated:
        return False
    if user.is_staff:
        return True
    role, merchant = _link(user)
    return role == "operator" and merchant == tenant
