import pytest

from tests.recon.conftest import ledger, merchant, operator, viewer  # noqa: F401


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)
