import pytest

from tests.recon.factories import AccountFactory, MerchantFactory, ReconRuleFactory


@pytest.fixture
def merchant(db):
    return MerchantFactory(merchant_id="acme")


@pytest.fixture
def ledger(merchant):
    """A merchant with a payments account (account_one), a bank account (account_two) and a rule."""
    payments = AccountFactory(merchant=merchant, account_name="payments", account_type="DEBIT_NORMAL")
    bank = AccountFactory(merchant=merchant, account_name="bank", account_type="CREDIT_NORMAL")
    rule = ReconRuleFactory(merchant=merchant, account_one=payments, account_two=bank)
    return type("Ledger", (), {"merchant": merchant, "payments": payments, "bank": bank, "rule": rule})


@pytest.fixture
def viewer(django_user_model, merchant):
    from recon.models import MerchantMembership

    user = django_user_model.objects.create_user("viewer", password="pw")
    MerchantMembership.objects.create(user=user, merchant=merchant, role="viewer")
    return user


@pytest.fixture
def operator(django_user_model, merchant):
    from recon.models import MerchantMembership

    user = django_user_model.objects.create_user("operator", password="pw")
    MerchantMembership.objects.create(user=user, merchant=merchant, role="operator")
    return user


@pytest.fixture
def viewer_api(viewer):
    from tests.conftest import client_for

    return client_for(viewer)


@pytest.fixture
def operator_api(operator):
    from tests.conftest import client_for

    return client_for(operator)


@pytest.fixture
def other_merchant_operator_api(django_user_model):
    """An operator of another merchant."""
    from recon.models import MerchantMembership
    from tests.conftest import client_for
    from tests.recon.factories import MerchantFactory

    user = django_user_model.objects.create_user("stranger", password="pw")
    MerchantMembership.objects.create(user=user, merchant=MerchantFactory(merchant_id="other"), role="operator")
    return client_for(user)
