"""What the reliability tests share: a bulk of real staging entries, the ledger check that ends every fault
test (nothing lost, nothing doubled, ledger balanced, nothing stuck), clusters as machines, PostgreSQL restarts,
and the figures each test reports (printed at the end of the run by tests/reliability/conftest.py)."""

import datetime as dt
import json
import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass
from decimal import Decimal

from django.db import InterfaceError, OperationalError, connection
from django.db.models import Count, F, Q, Sum

from tests.conftest import wait_until

FIGURES: list[tuple[str, dict]] = []

# The product's defaults, but for logging: the tests measure what a deployment gets.
CLUSTER_ENV = {"Q_WORKERS": 2, "TRACKER_CONSUMERS": 2, "Q_LOG_LEVEL": "INFO", "LOG_LEVEL": "INFO"}
# unshare: a PID namespace of its own (and /proc to match), so two clusters on this host are two machines with
# the same host name and the same pids.
MACHINE = ("unshare", "--pid", "--fork", "--mount-proc")


def report(test: str, **figures) -> None:
    """Records a test's figures (kills, restarts, entries, seconds...) for the run's summary, and prints them."""
    FIGURES.append((test, figures))
    print(f"reliability {test}: " + json.dumps(figures, default=str))


@dataclass
class Ledger:
    merchant: object
    payments: object
    bank: object


def ledger(name: str) -> Ledger:
    """A merchant with a receivable (DEBIT_NORMAL) and a bank (CREDIT_NORMAL) account and the rule between them."""
    from recon.models import Account, Merchant, ReconRule

    merchant = Merchant.objects.create(merchant_id=f"rel-{name}", merchant_name=name)
    payments = Account.objects.create(
        merchant=merchant, account_name="Payments", account_type="DEBIT_NORMAL", currency="USD"
    )
    bank = Account.objects.create(merchant=merchant, account_name="Bank", account_type="CREDIT_NORMAL", currency="USD")
    ReconRule.objects.create(merchant=merchant, account_one=payments, account_two=bank)
    return Ledger(merchant, payments, bank)


def stage_bulk(book: Ledger, n: int, *, prefix: str = "ord-", chunk: int = 10_000) -> Decimal:
    """n TRANSACTION entries (with their tasks) through the import's bulk producer; returns their total."""
    from recon import services

    day = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    total = Decimal(0)
    for start in range(0, n, chunk):
        rows = []
        for i in range(start, min(n, start + chunk)):
            amount = Decimal(f"{10 + i % 997}.{i % 100:02d}")
            total += amount
            rows.append(("DEBIT", amount, "USD", day, "TRANSACTION", {"order_id": f"{prefix}{i}"}))
        services.staging_entries_create_rows(account=book.payments, rows=rows)
    return total


def _db(read, default=None):
    """Runs a read; while the database is down (it is being restarted) returns `default`."""
    try:
        return read()
    except (OperationalError, InterfaceError):
        connection.close()
        return default


def processed(book: Ledger) -> int | None:
    return _db(lambda: book.payments.staging_entries.filter(status="PROCESSED").count())


def wait_processed(book: Ledger, at_least: int, timeout: float, what: str = "") -> float:
    """Waits until `at_least` entries are PROCESSED; returns when (monotonic)."""
    wait_until(lambda: (processed(book) or 0) >= at_least, timeout, 0.05, what or f"{at_least} entries processed")
    return time.monotonic()


def wait_progress(book: Ledger, timeout: float, what: str) -> float:
    """Waits until one more entry than now is PROCESSED (the first completion after a fault); returns when."""
    base = None
    while base is None:
        base = processed(book)
        time.sleep(0.02)
    return wait_processed(book, base + 1, timeout, what)


def held_by(fragment: str) -> int:
    """PROCESSING tasks whose lease holder contains `fragment` (a worker id, or a cluster id)."""
    from tracker.models import ProcessTracker

    return _db(lambda: ProcessTracker.objects.filter(status="PROCESSING", locked_by__contains=fragment).count(), 1)


def clusters_alive(consumers: int = CLUSTER_ENV["TRACKER_CONSUMERS"]) -> dict[str, list]:
    """{cluster id: its live heartbeat rows} for the clusters whose every consumer slot is alive."""
    from tracker.models import WorkerHeartbeat
    from tracker.worker import stale_before

    rows = _db(lambda: list(WorkerHeartbeat.objects.filter(beat_at__gte=stale_before()).exclude(worker_id="")), [])
    by_cluster: dict[str, list] = {}
    for row in rows:
        by_cluster.setdefault(row.cluster, []).append(row)
    return {c: r for c, r in by_cluster.items() if len(r) >= consumers}


def wait_new_cluster(known: set[str], timeout: float = 60) -> str:
    """Waits for a cluster not in `known` to have all its consumers alive; returns its id (and adds it)."""
    found = wait_until(lambda: [c for c in clusters_alive() if c not in known], timeout, 0.05, "a new cluster")
    known.add(found[0])
    return found[0]


def kill_group(proc, sig=signal.SIGKILL) -> None:
    os.killpg(proc.pid, sig)


def stop_seconds(proc, timeout: float) -> float | None:
    """Seconds until `proc` exits, or None when it is still running after `timeout`."""
    start = time.monotonic()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return round(time.monotonic() - start, 2)


def pg_restart() -> dict:
    """Restarts the test run's PostgreSQL (fast mode: every connection is cut) and waits until it answers."""
    data, bindir = os.environ["PGDATA"], os.environ["PGBINDIR"]
    cmd = [
        f"{bindir}/pg_ctl",
        "-D",
        data,
        "-m",
        "fast",
        "-w",
        "-l",
        os.path.join(os.path.dirname(data), "server.log"),
        "restart",
    ]
    if os.geteuid() == 0:  # as the owner of the data directory (PostgreSQL refuses to run as root)
        cmd = ["runuser", "-u", pwd.getpwuid(os.stat(data).st_uid).pw_name, "--", *cmd]
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, start_new_session=True)
    connection.close()
    wait_until(lambda: _db(lambda: connection.ensure_connection() or True, False), 30, 0.05, "PostgreSQL back")
    return {"restart_seconds": round(time.monotonic() - start, 2)}


def check_ledger(book: Ledger, n: int, total: Decimal) -> dict:
    """The end of every fault test: every entry processed once (nothing lost, nothing doubled), each transaction
    and the whole ledger balanced, the balances agree with the entries, and no task left anywhere but COMPLETED
    (nothing stuck). Returns the figures."""
    from django.contrib.contenttypes.models import ContentType

    from recon.balances import balance_drift
    from recon.models import Account, Entry, StagingEntry, Transaction
    from tracker.models import ProcessTracker, Transition

    staging = StagingEntry.objects.filter(account=book.payments)
    by_status = dict(staging.values_list("status").annotate(n=Count("pk")).order_by())
    assert by_status == {"PROCESSED": n}, f"entries by status: {by_status}"
    tasks = dict(ProcessTracker.objects.values_list("status").annotate(n=Count("pk")).order_by())
    assert tasks.get("COMPLETED", 0) >= n and set(tasks) == {"COMPLETED"}, f"tasks by status: {tasks}"

    txns = Transaction.objects.filter(merchant=book.merchant)
    assert txns.count() == n, f"{txns.count()} transactions for {n} entries"
    assert txns.values("source_staging_entry").distinct().count() == n
    assert not txns.exclude(version=1).exists() and not txns.exclude(status="EXPECTED").exists()
    legs = Entry.objects.filter(transaction__merchant=book.merchant)
    unbalanced = (
        legs.values("transaction")
        .annotate(
            debits=Sum("amount", filter=Q(entry_type="DEBIT")),
            credits=Sum("amount", filter=Q(entry_type="CREDIT")),
            n=Count("pk"),
        )
        .exclude(debits=F("credits"), n=2)
    )
    assert not unbalanced.exists(), f"unbalanced transactions: {list(unbalanced[:5])}"
    sums = legs.aggregate(
        debits=Sum("amount", filter=Q(entry_type="DEBIT")), credits=Sum("amount", filter=Q(entry_type="CREDIT"))
    )
    assert sums["debits"] == sums["credits"] == total, f"ledger sums {sums}, staged {total}"
    assert balance_drift(Account.objects.filter(merchant=book.merchant)) == {}

    ct = ContentType.objects.get_for_model(ProcessTracker)
    completions = (
        Transition.objects.filter(content_type=ct, to_status="COMPLETED")
        .values("object_id")
        .annotate(k=Count("id"))
        .order_by()
    )
    doubled = completions.filter(k__gt=1).count()
    assert doubled == 0, f"{doubled} tasks completed more than once"
    claims = Transition.objects.filter(content_type=ct, to_status="PROCESSING").count()
    return {
        "entries": n,
        "claims": claims,
        "claimed_again": claims - tasks.get("COMPLETED", 0),
        "rescued": Transition.objects.filter(content_type=ct, by_worker="rescuer").count(),
    }
