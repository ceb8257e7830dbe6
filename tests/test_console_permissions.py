"""Merchant teams in the console (issue 12, item 6): the permission matrix over every registered admin page,
custom view and action, for staff, an operator of merchant A, a viewer of A and an operator of merchant B.

LEVEL says what merchant users may do on each page (the policy); staff's own answers are the reference for what a
page allows at all (a read-only admin refuses `add` to everyone). A registration missing from LEVEL fails the test;
one that declares no scoping fails start-up (`test_an_unscoped_admin_is_refused_at_registration`)."""

import datetime as dt
import io
import re

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory
from django.urls import reverse

from config.console import ConsoleSite, StaffOnly, TenantScoped
from jobs import services as job_services
from jobs.models import Job, JobEvent, WorkflowStep
from recon import services, uploads
from recon.models import (Account, BankStatement, ClosedPeriod, Entry, MerchantMembership, ReconRule, StagingEntry, StagingStatus,
                          Transaction, Upload)
from tests.recon.factories import AccountFactory, MerchantFactory, ReconRuleFactory, stage
from tracker.models import ProcessTracker
from tracker.worker import Worker

pytestmark = pytest.mark.django_db

# What merchant users may do on each project admin: "operate" (operators act, viewers read), "view" (everyone
# reads, nobody changes), "staff" (invisible). Admins of third-party apps are all staff only.
LEVEL = {
    "recon.merchant": "view", "recon.merchantmembership": "staff", "recon.account": "operate",
    "recon.reconrule": "operate", "recon.transaction": "view", "recon.entry": "view", "recon.stagingentry": "operate",
    "recon.closedperiod": "view", "recon.upload": "view", "tracker.processtracker": "operate",
    "tracker.workerheartbeat": "staff", "jobs.job": "operate", "jobs.jobevent": "view", "recon.bankstatement": "view",
    "jobs.workflowstep": "operate",
}
# An object of the given merchant, per tenant-scoped admin.
OBJECT_OF = {
    "recon.merchant": lambda m: m,
    "recon.account": lambda m: Account.objects.filter(merchant=m).order_by("account_name").first(),
    "recon.reconrule": lambda m: ReconRule.objects.filter(merchant=m).first(),
    "recon.transaction": lambda m: Transaction.objects.filter(merchant=m).first(),
    "recon.entry": lambda m: Entry.objects.filter(account__merchant=m).first(),
    "recon.stagingentry": lambda m: StagingEntry.objects.filter(account__merchant=m,
                                                               status=StagingStatus.NEEDS_MANUAL_REVIEW).first(),
    "recon.closedperiod": lambda m: ClosedPeriod.objects.filter(merchant=m).first(),
    "recon.upload": lambda m: Upload.objects.filter(account__merchant=m).first(),
    "recon.bankstatement": lambda m: BankStatement.objects.filter(account__merchant=m).first(),
    "tracker.processtracker": lambda m: ProcessTracker.objects.filter(tenant=m.pk).order_by("created_at").first(),
    "jobs.job": lambda m: Job.objects.filter(merchant_id=m.pk).first(),
    "jobs.jobevent": lambda m: JobEvent.objects.filter(job__merchant_id=m.pk).first(),
    "jobs.workflowstep": lambda m: WorkflowStep.objects.filter(job__merchant_id=m.pk).order_by("id").first(),
}
OWN = ("changelist", "add", "change", "delete", "history")
# Answers of a view that let the user in: a page, a redirect after an action, GET on a POST-only view, or 400
# for a transition the object's state does not allow.
ALLOWED = (200, 302, 400, 405)


def level(model) -> str:
    return LEVEL.get(model._meta.label_lower, "staff" if model._meta.app_label not in ("recon", "tracker", "jobs")
                     else "missing")


class World:
    """Merchants alpha-co and beta-co, each with accounts, a rule, processed and in-review entries, a closed
    period, an upload and its import job; a personal job of A's operator."""

    def __init__(self, django_user_model):
        User = django_user_model
        self.staff = User.objects.create_user("boss", password="pw", is_staff=True, is_superuser=True)
        self.alpha = MerchantFactory(merchant_id="alpha-co", merchant_name="Alpha Company")
        self.beta = MerchantFactory(merchant_id="beta-co", merchant_name="Beta Company")
        self.op_a = User.objects.create_user("op_a", password="pw")
        self.viewer_a = User.objects.create_user("viewer_a", password="pw")
        self.op_b = User.objects.create_user("op_b", password="pw")
        MerchantMembership.objects.create(user=self.op_a, merchant=self.alpha, role="operator")
        MerchantMembership.objects.create(user=self.viewer_a, merchant=self.alpha, role="viewer")
        MerchantMembership.objects.create(user=self.op_b, merchant=self.beta, role="operator")
        for merchant, name, by in ((self.alpha, "Alpha", self.op_a), (self.beta, "Beta", self.op_b)):
            payments = AccountFactory(merchant=merchant, account_name=f"{name} Payments")
            bank = AccountFactory(merchant=merchant, account_name=f"{name} Bank", account_type="CREDIT_NORMAL")
            ReconRuleFactory(merchant=merchant, account_one=payments, account_two=bank)
            stage(payments, order_id=f"{name}-paid")
            stage(bank, mode="CONFIRMATION", side="CREDIT", order_id=f"{name}-unknown")
            Worker("matrix").drain(budget_seconds=20)
            ClosedPeriod.objects.create(merchant=merchant, start_date=dt.date(2020, 1, 1),
                                        end_date=dt.date(2020, 1, 31), closed_by=self.staff)
            uploads.file_import_start(account=payments, file=io.BytesIO(
                b"order_id,amount,currency,transaction_date,type\nx,1.00,USD,2026-11-01,Payment\n"),
                name=f"{name}.csv", processing_mode="TRANSACTION", by=by)
            services.bank_statements_record(account=bank, upload=Upload.objects.filter(account=payments).first(),
                                            fmt="mt940", summaries=[{
                "statement_id": f"{name}-1", "account": "IBAN", "currency": "USD", "sequence": "1",
                "opening_balance": "0", "closing_balance": "1", "opening_date": None, "closing_date": "2026-11-01",
                "lines": 1, "lines_total": "1", "balanced": True}])
            job_services.job_create(job_type="jobs.diamond", params={}, merchant_id=merchant.pk)
        # Demo types are staff-only to start (issue 17, item 7): the personal job is created by the system for op_a.
        self.personal = job_services.job_create(job_type="jobs.countdown", params={"steps": 1})
        Job.objects.filter(pk=self.personal.pk).update(owner=self.op_a)
        self.personal.refresh_from_db()
        self.clients = {}
        for who in ("staff", "op_a", "viewer_a", "op_b"):
            client = Client()
            client.force_login(getattr(self, who))
            self.clients[who] = client


@pytest.fixture
def world(django_user_model):
    return World(django_user_model)


def registered():
    return sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label_lower)


def url_name(model_admin, page: str) -> str:
    return f"admin:{model_admin.opts.app_label}_{model_admin.opts.model_name}_{page}"


def snapshot(obj):
    obj = type(obj)._default_manager.get(pk=obj.pk)
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def test_every_registered_admin_has_a_policy_and_is_scoped():
    for model, model_admin in registered():
        assert level(model) != "missing", f"{model._meta.label}: add it to LEVEL (what may merchant users do?)"
        if level(model) == "staff":
            assert isinstance(model_admin, StaffOnly), model._meta.label
        else:
            assert isinstance(model_admin, TenantScoped), model._meta.label
            assert model._meta.label_lower in OBJECT_OF, model._meta.label


def test_admin_pages_matrix(world):
    """Changelist, add, and the change, history and delete pages of an object of A and one of B."""
    checked = 0
    for model, model_admin in registered():
        lvl, label = level(model), model._meta.label_lower
        objects = {"A": OBJECT_OF[label](world.alpha), "B": OBJECT_OF[label](world.beta)} if lvl != "staff" else \
            {"A": model._default_manager.first()}
        pages = [("changelist", None, None), ("add", None, None)]
        pages += [(page, tenant, obj) for tenant, obj in objects.items() if obj is not None
                  for page in ("change", "history", "delete")]
        assert lvl == "staff" or all(objects.values()), f"{label}: the world has no object of each merchant"
        for page, tenant, obj in pages:
            url = reverse(url_name(model_admin, page), args=[obj.pk] if obj is not None else [])
            staff = world.clients["staff"].get(url)
            assert staff.status_code in (200, 403), (url, staff.status_code)
            for who, home in (("op_a", "A"), ("viewer_a", "A"), ("op_b", "B")):
                got = world.clients[who].get(url)
                if lvl == "staff":
                    want = 403
                elif tenant is not None and tenant != home:
                    want = 404  # another merchant's object: not found, before any permission check
                elif page in ("add", "delete") and (lvl == "view" or who == "viewer_a"):
                    want = 403
                else:
                    want = staff.status_code
                assert got.status_code == want, f"{who} {url}: {got.status_code}, expected {want}"
                if page == "change" and got.status_code == 200:
                    may_save = 'name="_save"' in staff.content.decode() and lvl == "operate" and who != "viewer_a"
                    assert ('name="_save"' in got.content.decode()) == may_save, f"{who} {url}: Save button"
                checked += 1
            if page == "change" and lvl != "staff":  # a POST to the change page (a save, an FSM button)
                for who, home in (("viewer_a", "A"), ("op_b", "B")):
                    if tenant != home or who == "viewer_a":  # a viewer's own object: 403; another's: 404
                        want = 404 if tenant != home else 403
                        assert world.clients[who].post(url, {}).status_code == want, f"POST {who} {url}"
    assert checked > 150


# Values for the other URL parameters of custom views (django-fsm-2's transition view).
URL_PARAMS = {"recon.stagingentry": {"transition_name": "ignore"}, "tracker.processtracker": {"transition_name": "cancel"},
              "recon.closedperiod": {"job_id": "00000000-0000-7000-8000-000000000000"},  # no such job: redirect
              "jobs.workflowstep": {"name": "recon.settlement_run"}}


def custom_urls(model_admin):
    """(name, the object parameter or None, other parameters) of the admin's own views beyond Django's
    changelist/add/change/delete/history."""
    own = {f"{model_admin.opts.app_label}_{model_admin.opts.model_name}_{p}" for p in OWN}
    for pattern in model_admin.get_urls():
        name = getattr(pattern, "name", None)
        if name and name not in own:
            params = re.findall(r"<(?:\w+:)?(\w+)>", str(pattern.pattern))
            key = next((p for p in params if p in ("object_id", model_admin.opts.pk.name)), None)
            others = {p: URL_PARAMS[model_admin.opts.label_lower][p] for p in params if p != key}
            yield name, key, others


def test_custom_views_matrix(world):
    seen = []
    for model, model_admin in registered():
        lvl = level(model)
        for name, key, others in custom_urls(model_admin):
            seen.append(name)
            if key is None:
                url = reverse(f"admin:{name}", kwargs=others)
                staff = world.clients["staff"].get(url).status_code
                for who in ("op_a", "viewer_a", "op_b"):
                    want = 403 if lvl == "staff" else staff
                    assert world.clients[who].get(url).status_code == want, (who, url)
                continue
            if lvl == "staff":
                obj = model._default_manager.first()
                url = reverse(f"admin:{name}", kwargs={key: obj.pk, **others})
                for who in ("op_a", "viewer_a", "op_b"):
                    assert world.clients[who].get(url).status_code == 403, (who, url)
                continue
            own_a = OBJECT_OF[model._meta.label_lower](world.alpha)
            url = reverse(f"admin:{name}", kwargs={key: own_a.pk, **others})
            staff = world.clients["staff"].get(url).status_code
            assert staff in ALLOWED, (url, staff)
            assert world.clients["op_b"].get(url).status_code == 404, url
            assert world.clients["op_b"].post(url, {}).status_code == 404, url
            # A viewer may open a view (the view itself may then send them back: "only operators may import").
            assert world.clients["viewer_a"].get(url).status_code in ALLOWED, url
            assert world.clients["viewer_a"].post(url, {}).status_code == 403, url
            assert world.clients["op_a"].get(url).status_code == staff, url
            if lvl == "operate":
                assert world.clients["op_a"].post(url, {}).status_code in ALLOWED, url
    assert {"recon_account_import_csv", "recon_stagingentry_match", "recon_summary", "jobs_job_act",
            "recon_stagingentry_transition", "tracker_processtracker_transition"} <= set(seen)


def offered(client, url) -> set[str]:
    html = client.get(url).content.decode()
    select = re.search(r'<select name="action".*?</select>', html, re.S)
    return set(re.findall(r'<option value="(\w+)"', select.group(0))) - {""} if select else set()


def test_actions_matrix(world):
    """Viewers are offered no action and posting one does nothing; operators are offered what staff are (on the
    pages merchant users may operate) and an action never touches another merchant's rows."""
    checked = 0
    for model, model_admin in registered():
        lvl, label = level(model), model._meta.label_lower
        changelist = reverse(url_name(model_admin, "changelist"))
        staff_actions = offered(world.clients["staff"], changelist)
        if lvl == "staff":
            for who in ("op_a", "viewer_a", "op_b"):
                assert world.clients[who].get(changelist).status_code == 403
            continue
        assert offered(world.clients["viewer_a"], changelist) == set(), label
        want_op = staff_actions if lvl == "operate" else set()
        assert offered(world.clients["op_a"], changelist) == want_op, label
        obj_a = OBJECT_OF[label](world.alpha)
        for action in staff_actions:
            before = snapshot(obj_a)
            for who in ("viewer_a", "op_b"):
                resp = world.clients[who].post(changelist, {"action": action, "_selected_action": [str(obj_a.pk)]},
                                               follow=True)
                assert resp.status_code == 200, (who, label, action)
                assert snapshot(obj_a) == before, f"{who} ran {action} on {label} of alpha-co"
                checked += 1
    assert checked >= 8


def test_operators_actions_change_only_their_merchants_rows(world):
    review = {m: StagingEntry.objects.get(account__merchant=m, status=StagingStatus.NEEDS_MANUAL_REVIEW)
              for m in (world.alpha, world.beta)}
    resp = world.clients["op_a"].post(reverse("admin:recon_stagingentry_changelist"), follow=True, data={
        "action": "ignore_selected", "_selected_action": [str(review[world.alpha].pk), str(review[world.beta].pk)],
        "apply": "1", "reason": "duplicate"})
    assert resp.status_code == 200
    statuses = {m.pk: StagingEntry.objects.get(pk=e.pk).status for m, e in review.items()}
    assert statuses == {"alpha-co": StagingStatus.ARCHIVED, "beta-co": StagingStatus.NEEDS_MANUAL_REVIEW}
    jobs = {m: Job.objects.get(merchant_id=m.pk, job_type="recon.import_file") for m in (world.alpha, world.beta)}
    world.clients["op_b"].post(reverse("admin:jobs_job_changelist"), {
        "action": "cancel_selected", "_selected_action": [str(jobs[world.alpha].pk), str(jobs[world.beta].pk)]})
    assert {m.pk: Job.objects.get(pk=j.pk).state for m, j in jobs.items()} == \
        {"alpha-co": "CREATED", "beta-co": "CANCELLED"}


def test_personal_jobs_are_their_owners(world):
    url = reverse("admin:jobs_job_change", args=[world.personal.pk])
    assert world.clients["op_a"].get(url).status_code == 200
    assert world.clients["viewer_a"].get(url).status_code == 404
    assert world.clients["op_b"].get(url).status_code == 404
    assert world.clients["staff"].get(url).status_code == 200
    act = reverse("admin:jobs_job_act", args=[world.personal.pk])
    assert world.clients["op_b"].post(act, {"action": "cancel"}).status_code == 404
    assert world.clients["op_a"].post(act, {"action": "cancel"}).status_code == 302
    assert Job.objects.get(pk=world.personal.pk).state == "CANCELLED"


def test_pages_of_merchant_users_never_name_another_merchant(world):
    """Lists, filters, choices and the index show a merchant user nothing of the other merchant."""
    for model, model_admin in registered():
        if level(model) == "staff":
            continue
        pages = [reverse(url_name(model_admin, "changelist"))]
        request = RequestFactory().get("/")
        request.user = world.staff
        if model_admin.has_add_permission(request):
            pages.append(reverse(url_name(model_admin, "add")))
        for url in pages:
            for who, other in (("op_a", "Beta"), ("viewer_a", "Beta"), ("op_b", "Alpha")):
                resp = world.clients[who].get(url)
                html = resp.content.decode()
                if resp.status_code == 200:
                    assert other not in html and other.lower() + "-co" not in html, f"{who} sees {other} on {url}"
    index = world.clients["op_a"].get("/admin/").content.decode()
    assert "/admin/recon/stagingentry/" in index and "/admin/jobs/job/" in index
    for hidden in ("/admin/auth/user/", "/admin/recon/merchantmembership/", "/admin/tracker/workerheartbeat/",
                   "/admin/django_q/"):
        assert hidden not in index, hidden


def test_autocomplete_offers_only_the_users_merchants(world):
    url = "/admin/autocomplete/?app_label=recon&model_name=reconrule&field_name=account_one&term="
    names = {r["text"] for r in world.clients["op_a"].get(url).json()["results"]}
    assert names and all("Alpha" in n for n in names)
    assert world.clients["op_a"].get(
        "/admin/autocomplete/?app_label=recon&model_name=merchantmembership&field_name=user&term=").status_code == 403


def test_an_operator_cannot_create_a_row_for_another_merchant(world):
    """The add form offers only the operator's merchants, and a forged choice is refused."""
    beta_payments = Account.objects.get(account_name="Beta Payments")
    alpha_payments = Account.objects.get(account_name="Alpha Payments")
    alpha_bank = Account.objects.get(account_name="Alpha Bank")
    url = reverse("admin:recon_reconrule_add")
    form = world.clients["op_a"].get(url).content.decode()
    assert "beta-co" not in form and "Beta" not in form
    before = ReconRule.objects.count()
    resp = world.clients["op_a"].post(url, {"merchant": "beta-co", "account_one": beta_payments.pk,
                                            "account_two": alpha_bank.pk, "match_key": "order_id",
                                            "amount_tolerance": "0", "amount_tolerance_pct": "0"})
    assert resp.status_code == 200 and "Select a valid choice" in resp.content.decode()
    assert ReconRule.objects.count() == before
    assert world.clients["viewer_a"].post(url, {"merchant": "alpha-co", "account_one": alpha_payments.pk,
                                                "account_two": alpha_bank.pk}).status_code == 403


def test_console_login_admits_staff_and_merchant_users_only(world, django_user_model):
    django_user_model.objects.create_user("nobody", password="pw")
    for username, ok in (("boss", True), ("op_a", True), ("viewer_a", True), ("nobody", False)):
        resp = Client().post("/admin/login/?next=/admin/", {"username": username, "password": "pw"})
        assert (resp.status_code == 302) == ok, username
        if not ok:
            assert "staff or merchant account" in resp.content.decode()


def test_an_unscoped_admin_is_refused_at_registration():
    site = ConsoleSite(name="probe")

    class Unscoped(admin.ModelAdmin):
        pass

    with pytest.raises(ImproperlyConfigured, match="tenant_field"):
        site.register(StagingEntry, Unscoped)
    with pytest.raises(ImproperlyConfigured, match="tenant_field"):
        site.register(Account)  # no admin class at all

    class Hidden(admin.ModelAdmin):
        staff_only = True

    class Scoped(admin.ModelAdmin):
        tenant_field = "account__merchant_id"

    site.register(Upload, Hidden)
    site.register(StagingEntry, Scoped)
    site.register(Group)  # a third-party app's model: staff only without saying so
    assert isinstance(site._registry[Upload], StaffOnly) and isinstance(site._registry[Group], StaffOnly)
    assert isinstance(site._registry[StagingEntry], TenantScoped)
