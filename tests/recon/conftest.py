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
