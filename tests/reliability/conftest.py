"""The reliability suite (`make test-reliability`): every test under tests/reliability/ carries the
`reliability` marker, which `make test` leaves out (pyproject addopts), and the figures the tests report
(tests.reliability.harness.report) are printed at the end of the run."""

import pytest

from tests.recon.conftest import ledger, merchant, operator, viewer  # noqa: F401
from tests.reliability import harness


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/reliability/" in item.nodeid:
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(terminalreporter):
    if not harness.FIGURES:
        return
    terminalreporter.section("reliability figures")
    for test, figures in harness.FIGURES:
        terminalreporter.write_line(f"{test}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
