"""The operations console's admin site: staff and merchant teams on the same `/admin/` pages, each merchant user
seeing only the merchants they belong to. All the scoping lives here, so a new admin page cannot forget it.

Every ModelAdmin of a project app declares one of:

- `tenant_field = "account__merchant_id"`: the path from the model to its merchant id (a tenant, as
  `settings.TENANT_ACCESS` names them). Optional `tenant_owner_field = "owner"`: rows without a tenant are their
  owner's (personal jobs). Optional `tenant_permissions` (default view, add, change, delete): what merchant users
  may do at most; viewers of a merchant always only view.
- `staff_only = True`: invisible to merchant users (users, memberships, heartbeats, django-q2's pages...).

Registering one that declares neither raises ImproperlyConfigured at start-up. Admins of third-party apps (auth,
django-q2, authtoken) are staff only.

Roles (recon.models.MerchantMembership): merchant users are not staff and hold no model permissions; the site's
`MerchantRoleBackend` grants them, on the tenant-scoped admins, `view` for any membership and `add`, `change`,
`delete` (within `tenant_permissions`) to operators; each object is then checked against its own merchant
(`TenantScoped`): a viewer of A reads A's rows, an operator of A changes them, nobody outside A sees them (404).
Staff keep Django's permissions and see everything."""

from dataclasses import replace
from functools import wraps
from importlib import import_module

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.backends import BaseBackend
from django.core.exceptions import ImproperlyConfigured, PermissionDenied, ValidationError
from django.db.models import Q
from django.db.models.base import ModelBase
from django.http import Http404

ALL_PERMISSIONS = ("view", "add", "change", "delete")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def policy():
    return import_module(settings.TENANT_ACCESS)


def is_staff(user) -> bool:
    return bool(user.is_active and user.is_staff)


def tenants_of(user) -> tuple[set[str], set[str]]:
    """(merchant ids the user sees, merchant ids the user operates), cached on the user object (one request)."""
    cached = getattr(user, "_console_tenants", None)
    if cached is None:
        cached = user._console_tenants = (policy().visible_tenants(user) or set(),
                                          policy().operable_tenants(user) or set())
    return cached


def is_member(user) -> bool:
    return bool(user.is_active and not user.is_staff and tenants_of(user)[0])


class ConsoleLoginForm(AdminAuthenticationForm):
    """Admits staff and users linked to a merchant."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": "Please enter the correct %(username)s and password of a staff or merchant account. "
                         "Note that both fields may be case-sensitive.",
    }

    def confirm_login_allowed(self, user):
        if not (user.is_active and (user.is_staff or is_member(user))):
            raise ValidationError(self.error_messages["invalid_login"], code="invalid_login",
                                  params={"username": self.username_field.verbose_name})


def _get(obj, path: str):
    for part in path.split("__"):
        if obj is None:
            return None
        obj = getattr(obj, part)
    return obj


class TenantScoped:
    """Mixed into every tenant-scoped ModelAdmin by `ConsoleSite.register` (in front of it, so its checks wrap the
    admin's own). Non-staff users get only their merchants' rows, objects and choices; objects of other merchants
    answer 404; changes need the operator role on the object's merchant."""

    # Declared by the admin (no defaults here: this class comes first in the MRO and would hide them).
    tenant_field: str
    tenant_owner_field: str | None
    tenant_permissions: tuple[str, ...]

    @property
    def _owner_field(self) -> str | None:
        return getattr(self, "tenant_owner_field", None)

    @property
    def _permissions(self) -> tuple[str, ...]:
        return tuple(getattr(self, "tenant_permissions", ALL_PERMISSIONS))

    # --- rows ----------------------------------------------------------------------------------------------
    def tenant_q(self, user, operable: bool = False) -> Q:
        visible, operated = tenants_of(user)
        q = Q(**{f"{self.tenant_field}__in": operated if operable else visible})
        if self._owner_field:
            q |= Q(**{self.tenant_field: "", self._owner_field: user.pk})
        return q

    def scope(self, queryset, request, operable: bool = False):
        return queryset if is_staff(request.user) else queryset.filter(self.tenant_q(request.user, operable))

    def tenant_allows(self, request, obj, operable: bool) -> bool:
        """Whether a non-staff user may see (or operate) this object, read from the object itself."""
        visible, operated = tenants_of(request.user)
        tenant = _get(obj, self.tenant_field)
        if tenant in (operated if operable else visible):
            return True
        if not self._owner_field or tenant:
            return False
        owner = _get(obj, self._owner_field)
        return owner is not None and getattr(owner, "pk", owner) == request.user.pk

    def get_queryset(self, request):
        return self.scope(super().get_queryset(request), request)

    def get_object(self, request, object_id, from_field=None):
        """An object that does not exist, or that the user may not see, is a 404 (before any 403)."""
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404(f"No {self.opts.verbose_name} with ID {object_id!r}.")
        return obj

    # --- permissions ---------------------------------------------------------------------------------------
    def _member_may(self, request, perm: str, obj) -> bool:
        if perm not in self._permissions:
            return False
        return obj is None or self.tenant_allows(request, obj, operable=perm != "view")

    def has_view_permission(self, request, obj=None):
        allowed = super().has_view_permission(request, obj)
        return allowed if is_staff(request.user) else allowed and self._member_may(request, "view", obj)

    def has_add_permission(self, request):
        allowed = super().has_add_permission(request)
        return allowed if is_staff(request.user) else allowed and self._member_may(request, "add", None)

    def has_change_permission(self, request, obj=None):
        allowed = super().has_change_permission(request, obj)
        return allowed if is_staff(request.user) else allowed and self._member_may(request, "change", obj)

    def has_delete_permission(self, request, obj=None):
        allowed = super().has_delete_permission(request, obj)
        return allowed if is_staff(request.user) else allowed and self._member_may(request, "delete", obj)

    def save_model(self, request, obj, form, change):
        if not is_staff(request.user) and not self.tenant_allows(request, obj, operable=True):
            raise PermissionDenied("Only operators of this merchant may do this.")
        return super().save_model(request, obj, form, change)

    # --- choices: foreign keys, filters -------------------------------------------------------------------
    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if not is_staff(request.user) and "queryset" not in kwargs:
            related = self.admin_site._registry.get(db_field.remote_field.model)
            queryset = db_field.remote_field.model._default_manager.all()
            kwargs["queryset"] = (related.scope(queryset, request, operable=True) if isinstance(related, TenantScoped)
                                  else queryset.none())
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_list_filter(self, request):
        """For merchant users, a filter on a relation lists only the related rows of their own rows."""
        filters = super().get_list_filter(request)
        if is_staff(request.user):
            return filters
        scoped = []
        for item in filters:
            name = item[0] if isinstance(item, (list, tuple)) else item
            kind = item[1] if isinstance(item, (list, tuple)) else None
            if isinstance(name, str) and self._is_relation(name) and kind in (None, admin.RelatedFieldListFilter):
                item = (name, admin.RelatedOnlyFieldListFilter)
            scoped.append(item)
        return scoped

    def _is_relation(self, path: str) -> bool:
        model, field = self.model, None
        for part in path.split("__"):
            try:
                field = model._meta.get_field(part)
            except Exception:
                return False
            model = field.related_model
            if model is None:
                return False
        return bool(field and field.is_relation)

    # --- actions and custom views -------------------------------------------------------------------------
    def _filter_actions_by_permissions(self, request, actions):
        """Merchant users: an action without declared permissions needs the change permission; every action
        gets only the selected rows of merchants the user operates."""
        actions = super()._filter_actions_by_permissions(request, actions)
        if is_staff(request.user):
            return actions
        kept = []
        for action in actions:
            if not getattr(action.func, "allowed_permissions", None) and not self.has_change_permission(request):
                continue
            kept.append(replace(action, func=self._operable_only(action.func)))
        return kept

    def _operable_only(self, func):
        @wraps(func)
        def action(modeladmin, request, queryset):
            return func(modeladmin, request, self.scope(queryset, request, operable=True))

        return action

    def get_urls(self):
        """Custom views (anything but Django's own changelist/add/change/delete/history) are guarded: an object in
        the URL must be visible (else 404), and a GET needs the view permission, any other method the change
        permission, on that object."""
        info = self.opts.app_label, self.opts.model_name
        own = {f"{info[0]}_{info[1]}_{name}" for name in ("changelist", "add", "change", "delete", "history")}
        urls = super().get_urls()
        for pattern in urls:
            if getattr(pattern, "name", None) and pattern.name not in own:
                pattern.callback = self._guarded(pattern.callback)
        return urls

    def _guarded(self, view):
        pk_name = self.opts.pk.name

        @wraps(view)
        def guarded(request, *args, **kwargs):
            if not self.admin_site.has_permission(request):  # the site's own view sends them to the login page
                return view(request, *args, **kwargs)
            obj = None
            object_id = kwargs.get("object_id", kwargs.get(pk_name))
            if object_id is not None:
                try:
                    obj = self.get_queryset(request).filter(pk=object_id).first()
                except (ValueError, ValidationError):
                    obj = None
                if obj is None:
                    raise Http404(f"No {self.opts.verbose_name} with ID {object_id!r}.")
            check = self.has_view_permission if request.method in SAFE_METHODS else self.has_change_permission
            if not check(request, obj):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return guarded


class StaffOnly:
    """Mixed into staff-only admins: nothing for anyone who is not staff, whatever permissions they hold."""

    def has_module_permission(self, request):
        return is_staff(request.user) and super().has_module_permission(request)

    def has_view_permission(self, request, obj=None):
        return is_staff(request.user) and super().has_view_permission(request, obj)

    def has_add_permission(self, request):
        return is_staff(request.user) and super().has_add_permission(request)

    def has_change_permission(self, request, obj=None):
        return is_staff(request.user) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return is_staff(request.user) and super().has_delete_permission(request, obj)


def _is_project_model(model) -> bool:
    """Whether the model's app is one of this repository's packages (not an installed third-party one)."""
    package = model._meta.app_config.name.split(".")[0]
    return (settings.BASE_DIR / package).is_dir() and not (settings.BASE_DIR / package).is_symlink()


class ConsoleSite(admin.AdminSite):
    site_header = "Recon ledger operations"
    site_title = "Recon ledger"
    index_title = "Operations console"
    site_url = "/admin/"  # "View site" leads to the console (the project has no other site)
    login_form = ConsoleLoginForm

    def has_permission(self, request):
        user = request.user
        return bool(user.is_active and (user.is_staff or is_member(user)))

    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = admin_class or admin.ModelAdmin
        models = [model_or_iterable] if isinstance(model_or_iterable, ModelBase) else list(model_or_iterable)
        for model in models:
            staff_only = getattr(admin_class, "staff_only", False)
            tenant_field = getattr(admin_class, "tenant_field", None)
            if _is_project_model(model) and not (staff_only or tenant_field):
                raise ImproperlyConfigured(
                    f"{admin_class.__module__}.{admin_class.__qualname__} (admin of {model._meta.label}) must declare "
                    f"`tenant_field` (the path to the merchant id, e.g. 'account__merchant_id') or "
                    f"`staff_only = True`: config/console.py scopes every console page for merchant users.")
            mixin = TenantScoped if tenant_field and not staff_only else StaffOnly
            unknown = set(getattr(admin_class, "tenant_permissions", ())) - set(ALL_PERMISSIONS)
            if unknown:
                raise ImproperlyConfigured(f"{admin_class.__qualname__}.tenant_permissions: unknown {sorted(unknown)}")
            scoped = type(admin_class.__name__, (mixin, admin_class),
                          {"__module__": admin_class.__module__, "__qualname__": admin_class.__qualname__})
            super().register(model, scoped, **options)

    def member_permissions(self) -> tuple[set[str], set[str]]:
        """(permissions every merchant user holds, permissions operators also hold), from the registry."""
        view, operate = set(), set()
        for model, model_admin in self._registry.items():
            if isinstance(model_admin, TenantScoped):
                label = f"{model._meta.app_label}.%s_{model._meta.model_name}"
                view.add(label % "view")
                operate.update(label % p for p in model_admin._permissions if p != "view")
        return view, operate


class MerchantRoleBackend(BaseBackend):
    """Model permissions of merchant users (not staff): view on the tenant-scoped admins for every member, add,
    change and delete for operators (as each admin's `tenant_permissions` allow). Object checks are the site's."""

    def _granted(self, user) -> set[str]:
        if not user.is_active or user.is_staff or user.is_anonymous:
            return set()
        cached = getattr(user, "_console_perms", None)
        if cached is None:
            visible, operated = tenants_of(user)
            view, operate = admin.site.member_permissions() if isinstance(admin.site, ConsoleSite) else (set(), set())
            cached = user._console_perms = (view if visible else set()) | (operate if operated else set())
        return cached

    def get_all_permissions(self, user_obj, obj=None):
        return set(self._granted(user_obj))

    def has_perm(self, user_obj, perm, obj=None):
        return perm in self._granted(user_obj)

    def has_module_perms(self, user_obj, app_label):
        return any(p.startswith(f"{app_label}.") for p in self._granted(user_obj))
