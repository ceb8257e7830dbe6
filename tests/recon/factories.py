"""factory_boy factories for recon models."""

import datetime as dt
from decimal import Decimal

import factory

from recon import services
from recon.models import Account, Merchant, MerchantMembership, ReconRule


class MerchantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Merchant

    merchant_id = factory.Sequence(lambda n: f"m{n}")
    merchant_name = factory.Sequence(lambda n: f"Merchant {n}")


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account

    merchant = factory.SubFactory(MerchantFactory)
    account_name = factory.Sequence(lambda n: f"Account {n}")
    account_type = "DEBIT_NORMAL"
    currency = "USD"
    initial_balance = Decimal("0")


class ReconRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ReconRule

    merchant = factory.SubFactory(MerchantFactory)
    account_one = factory.SubFactory(AccountFactory, merchant=factory.SelfAttribute("..merchant"))
    account_two = factory.SubFactory(
        AccountFactory, merchant=factory.SelfAttribute("..merchant"), account_type="CREDIT_NORMAL"
    )


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MerchantMembership

    merchant = factory.SubFactory(MerchantFactory)
    role = "viewer"


DAY = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def stage(
    account,
    *,
    mode="TRANSACTION",
    amount="100.00",
    side="DEBIT",
    currency=None,
    order_id="o1",
    when=DAY,
    metadata=None,
    **kw,
):
    """Creates a staging entry (and its task) through the service."""
    meta = {"order_id": order_id} if order_id is not None else {}
    meta.update(metadata or {})
    entry, _ = services.staging_entry_create(
        account=account,
        entry_type=side,
        amount=amount,
        currency=currency or account.currency,
        effective_date=when,
        processing_mode=mode,
        metadata=meta,
        **kw,
    )
    return entry
