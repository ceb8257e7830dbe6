"""Browser tests: Playwright (Python) driving Debian's Chromium against the product served by uvicorn (as in
production) on the test database. Data a test creates must be committed (`transactional_db`) for the server
process to see it. Screenshots go to `var/screenshots/` (`screenshot(page, name)`)."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, database_url
from tests.pgserver import free_port
from tests.reliability.server import answers, uvicorn_command

# Playwright's sync API runs an event loop in the test's thread; Django's ORM calls in the same test are safe
# (they run before or after a page call, never inside one).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = ROOT / "var" / "screenshots"

pytestmark = pytest.mark.browser


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module, closed after it: Playwright's sync API keeps an event loop
    running in the main thread while it is open, which later `asyncio.run()` calls (ASGI tests) refuse.
    Missing Chromium fails on CI and skips elsewhere."""
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM} (.ci/run installs Debian's chromium)")
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def live_url(django_db_setup, django_db_blocker, tmp_path_factory):
    """Base URL of `uvicorn config.asgi:application` started once for the session on the test database."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("uvicorn") / "uvicorn.log"
    with django_db_blocker.unblock():
        env = dict(os.environ, DATABASE_URL=database_url(), PYTHONUNBUFFERED="1")
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        uvicorn_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"uvicorn did not start:\n{Path(log_path).read_text()[-3000:]}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def page(browser, live_url, transactional_db):
    """A fresh browser context (own cookies) and page; `page.goto("/admin/")` is relative to the live server."""
    context = browser.new_context(base_url=live_url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def screenshot(page, name: str) -> Path:
    """Saves a full-page screenshot as var/screenshots/<name>.png and returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page, username: str, password: str) -> None:
    """Logs into the console through its login form and waits for the first page after it."""
    page.goto("/admin/login/?next=/admin/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_load_state("domcontentloaded")


@pytest.fixture
def cluster(processes):
    """A real `qcluster` on the test database, so jobs and staging entries progress while a page watches."""
    proc = processes.start(["manage.py", "qcluster"])
    yield proc


@pytest.fixture(autouse=True)
def _fast_password_hashing():
    """Overrides the suite's MD5 hasher: the server process checks passwords with the project's hashers."""


def drain() -> None:
    """Runs every due task in this process (the browser tests' data is processed before the page is opened)."""
    from tracker.worker import Worker

    Worker("browser-test").drain(budget_seconds=20)


def staff_and_acme(django_user_model):
    """A superuser `ops` (password `pw-ops-1`) and merchant Acme with a Payments and a Bank account and a recon
    rule between them. Returns (merchant, payments, bank)."""
    from tests.recon.factories import AccountFactory, MerchantFactory, ReconRuleFactory

    django_user_model.objects.create_user("ops", password="pw-ops-1", is_staff=True, is_superuser=True)
    merchant = MerchantFactory(merchant_id="acme", merchant_name="Acme")
    payments = AccountFactory(merchant=merchant, account_name="Payments", account_type="DEBIT_NORMAL")
    bank = AccountFactory(merchant=merchant, account_name="Bank", account_type="CREDIT_NORMAL")
    ReconRuleFactory(merchant=merchant, account_one=payments, account_two=bank)
    return merchant, payments, bank


def wait_for_js(page, expression: str, timeout: float = 15_000) -> None:
    """Waits until a JavaScript expression is truthy in the page, polling `page.evaluate` (which the console's
    Content-Security-Policy allows; Playwright's `wait_for_function` compiles the expression in the page, which
    the CSP refuses as eval)."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} ms waiting for {expression}")
        time.sleep(0.1)
