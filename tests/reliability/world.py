"""One merchant's objects of every kind an API path can name, plus users in every role, for the permission
matrix and the hostile-input corpus. Every path parameter of the API has an entry in `params`; a new parameter
without one fails the suite (so a new endpoint cannot go untested)."""

import datetime as dt
import uuid

from django.contrib.auth import get_user_model

from jobs import services as job_services
from recon import services
from recon.models import MerchantMembership
from tests.recon.factories import AccountFactory, MerchantFactory, ReconRuleFactory, stage


class World:
    def __init__(self, tag: str):
        users = get_user_model().objects
        self.merchant = MerchantFactory(merchant_id=f"m-{tag}")
        self.rival = MerchantFactory(merchant_id=f"rival-{tag}")
        self.account = AccountFactory(merchant=self.merchant, account_name="payments", account_type="DEBIT_NORMAL")
        self.bank = AccountFactory(merchant=self.merchant, account_name="bank", account_type="CREDIT_NORMAL")
        self.rule = ReconRuleFactory(merchant=self.merchant, account_one=self.account, account_two=self.bank)
        self.entry = stage(self.account, order_id=f"secret-order-{tag}")
        stage(self.bank, order_id=f"secret-order-{tag}", mode="CONFIRMATION", side="CREDIT")  # account has entries
        self.staff = users.create_user(f"staff-{tag}", password="pw", is_staff=True, is_superuser=True)
        self.operator = users.create_user(f"operator-{tag}", password="pw")
        self.viewer = users.create_user(f"viewer-{tag}", password="pw")
        self.stranger = users.create_user(f"stranger-{tag}", password="pw")  # operator of another merchant
        MerchantMembership.objects.create(user=self.operator, merchant=self.merchant, role="operator")
        MerchantMembership.objects.create(user=self.viewer, merchant=self.merchant, role="viewer")
        MerchantMembership.objects.create(user=self.stranger, merchant=self.rival, role="operator")
        # A workflow run (a job like any other), so the step paths (`steps/{step_name}/retry/`) name a real step.
        self.job = job_services.job_create(job_type="jobs.diamond", merchant_id=self.merchant.pk, params={})
        self.period = services.period_close(
            merchant=self.merchant,
            start_date=dt.date(2019, 1, 1),
            end_date=dt.date(2019, 1, 31),
            by=self.staff,
            reason="matrix",
        )
        self.params = {
            "merchant_id": self.merchant.pk,
            "account_id": str(self.account.pk),
            "rule_id": str(self.rule.pk),
            "staging_entry_id": str(self.entry.pk),
            "job_id": str(self.job.pk),
            "step_name": "start",
            "name": "jobs.diamond",
            "table": "review-queue",
            "task_id": str(self.entry.task_id),
            "period_id": str(self.period.pk),
        }
        # Strings that must never appear in an answer to another merchant's user.
        self.secrets = {
            self.merchant.pk,
            str(self.account.pk),
            str(self.bank.pk),
            str(self.entry.pk),
            str(self.job.pk),
            str(self.entry.task_id),
            f"secret-order-{tag}",
        }

    def path(self, template: str) -> str:
        out = template
        for name in [p.split("}")[0] for p in template.split("{")[1:]]:
            assert name in self.params, (
                f"no object for path parameter {{{name}}}: add one to tests/reliability/world.py"
            )
            out = out.replace("{" + name + "}", self.params[name])
        return out

    def unknown_path(self, template: str) -> str:
        out = template
        for name in [p.split("}")[0] for p in template.split("{")[1:]]:
            out = out.replace("{" + name + "}", str(uuid.uuid4()) if name != "merchant_id" else "no-such-merchant")
        return out
