"""The benchmark suite (`make bench`, `make bench-quick`).

Runs against the PostgreSQL in DATABASE_URL (the Makefile starts a durable throwaway one), with the real
`qcluster`, and prints one table of figures and ratios against peers measured in the same run; the JSON goes
to var/bench/. `--scale` multiplies every size (1.0 = the sizes of issue 5; 0.1 = bench-quick)."""

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
OUT = ROOT / "var" / "bench"
RESULTS: dict[str, dict] = {}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def record(key: str, value: float, unit: str, **extra) -> None:
    RESULTS[key] = {"value": round(value, 3), "unit": unit, **extra}
    log(f"{key}: {value:,.1f} {unit} {extra if extra else ''}")


def url_for(dbname: str) -> str:
    return re.sub(r"/[^/]*$", f"/{dbname}", os.environ["DATABASE_URL"])


def pg_bin(name: str) -> str:
    bindir = os.environ.get("PGBINDIR", "")
    return str(Path(bindir) / name) if bindir else name


def psql(sql: str, dbname: str = "postgres") -> str:
    return subprocess.run(
        [pg_bin("psql"), url_for(dbname), "-qAtc", sql], check=True, capture_output=True, text=True
    ).stdout.strip()


def recreate_database(dbname: str) -> str:
    psql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{dbname}"')
    return url_for(dbname)


# --- processes --------------------------------------------------------------------------------------------


class Cluster:
    """A real `manage.py qcluster` (own process group), stopped with SIGTERM then SIGKILL."""

    def __init__(self, **env):
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING", **{k: str(v) for k, v in env.items()})
        self.log = open(OUT / "qcluster.log", "ab")
        self.proc = subprocess.Popen(
            [PY, "manage.py", "qcluster"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        """SIGKILL to the whole group: the figures are taken by then, and a graceful stop waits for the
        consumers' slices to end (up to 15 s). Tasks left PROCESSING are not counted by any later step."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def rss_reset(self) -> None:
        """Resets the peak RSS (VmHWM) of the cluster's processes (Linux: clear_refs 5)."""
        for pid in self.pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    def pids(self) -> list[str]:
        return subprocess.run(
            ["ps", "-o", "pid=", "-g", str(self.proc.pid)], capture_output=True, text=True
        ).stdout.split()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def consumers_alive(n: int) -> bool:
    from tracker.worker import cluster_status

    return cluster_status()["consumers_alive"] >= n


# --- steps --------------------------------------------------------------------------------------------------


def bench_pgbench(scale: float) -> None:
    """pgbench's TPC-B-like transaction on the same server: the yardstick for end-to-end figures."""
    url = recreate_database("pgbench")
    subprocess.run(
        [pg_bin("pgbench"), "-i", "-q", "-s", "10" if scale >= 0.1 else "1", url], check=True, capture_output=True
    )
    seconds = max(2, int(30 * scale))
    out = subprocess.run(
        [pg_bin("pgbench"), "-c", "8", "-j", "2", "-T", str(seconds), "-M", "prepared", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    record("pgbench_tpcb_tps", tps, "tps", clients=8, seconds=seconds)


def bench_tracker_noop(scale: float, workers: int) -> None:
    """No-op tasks claimed and completed per second by the tracker in a real cluster. The tasks are committed
    together; the rate is tasks / (last completion - first claim), from the rows' own timestamps."""
    from django.db.models import Max, Min

    from tracker import services
    from tracker.models import ProcessTracker

    n = max(200, int(100_000 * scale))
    ProcessTracker.objects.filter(task_type="bench.noop").delete()
    with services.transaction.atomic():  # queued first: the consumers see them all at once
        for offset in range(0, n, 10_000):
            services.task_create_many(
                [services.TaskSpec("bench.noop", {"i": i}) for i in range(offset, min(n, offset + 10_000))]
            )
    done = ProcessTracker.objects.filter(task_type="bench.noop", status="COMPLETED")
    wait_for(lambda: done.count() >= n, 900, "no-op tasks", interval=0.2)
    span = done.aggregate(first=Min("processing_started_at"), last=Max("completed_at"))
    elapsed = (span["last"] - span["first"]).total_seconds()
    record("tracker_noop_tasks_per_s", n / elapsed, "tasks/s", tasks=n, workers=workers)


def bench_djangoq_noop(scale: float, workers: int) -> None:
    """django-q2 alone: one async_task per item, same cluster size, tracker consumers off; queued before the
    cluster starts, rate from the tasks' own start and stop times."""
    from django.db.models import Max, Min
    from django_q.models import OrmQ, Success, Task
    from django_q.tasks import async_task

    n = max(30, int(3_000 * scale))
    Task.objects.all().delete()
    OrmQ.objects.all().delete()
    for i in range(n):
        async_task("bench.handlers.noop", i, group="bench")
    done = Success.objects.filter(group="bench")
    with Cluster(Q_WORKERS=workers, TRACKER_CONSUMERS=0, Q_SAVE_LIMIT=0):
        wait_for(lambda: done.count() >= n, 900, "django-q2 tasks", interval=0.2)
    span = done.aggregate(first=Min("started"), last=Max("stopped"))
    elapsed = (span["last"] - span["first"]).total_seconds()
    record("djangoq_noop_tasks_per_s", n / elapsed, "tasks/s", tasks=n, workers=workers)


def bench_procrastinate_noop(scale: float, workers: int) -> None:
    """Procrastinate with a no-op task, as many worker processes as the cluster has; jobs deferred before the
    workers start, rate from the first `started` to the last `succeeded` event."""
    import importlib.util

    if importlib.util.find_spec("procrastinate") is None:
        log("procrastinate is not installed (pip install -e '.[bench]'); skipped")
        return
    url = recreate_database("procrastinate")
    env = dict(os.environ, PROCRASTINATE_URL=url)
    subprocess.run(
        [PY, "-m", "procrastinate", "--app", "bench.procrastinate_app.app", "schema", "--apply"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    n = max(200, int(20_000 * scale))
    code = (
        "from bench.procrastinate_app import app, noop\n"
        "with app.open():\n"
        f"    [noop.batch_defer(*[{{'i': i}} for i in range(o, min({n}, o + 5000))]) for o in range(0, {n}, 5000)]\n"
    )
    subprocess.run([PY, "-c", code], cwd=ROOT, env=env, check=True)
    procs = [
        subprocess.Popen(
            [PY, "-m", "bench.procrastinate_app", "worker", "1"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(workers)
    ]
    try:
        count = lambda: int(
            psql(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",  # noqa: E731
                "procrastinate",
            )
        )
        wait_for(lambda: count() >= n, 1800, "procrastinate jobs", interval=0.2)
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
    elapsed = float(
        psql(
            "SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')"
            " - min(at) FILTER (WHERE type = 'started')) FROM procrastinate_events",
            "procrastinate",
        )
    )
    record("procrastinate_noop_tasks_per_s", n / elapsed, "tasks/s", tasks=n, workers=workers)


def bench_admin_task_list(scale: float) -> None:
    """Admin task list with many tasks: median response time of a few pages and filters."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from tracker.models import ProcessTracker

    n = max(1000, int(1_000_000 * scale))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {ProcessTracker._meta.db_table} (task_id, task_type, queue, priority, tenant, payload, status,
                attempts, max_attempts, run_after, locked_by, last_error, error_details, created_at, updated_at)
            SELECT gen_random_uuid(), 'bench.noop', 'default', 100, 'm' || (i %% 50), jsonb_build_object('i', i),
                (ARRAY['COMPLETED','COMPLETED','COMPLETED','FAILED','CANCELLED','COMPLETED'])[1 + i %% 6], 1, 10,
                now(), '', CASE WHEN i %% 6 = 3 THEN 'ValueError: boom' ELSE '' END, '',
                now() - (i || ' seconds')::interval, now()
            FROM generate_series(1, %s) i""",
            [n],
        )
        # As autovacuum leaves a table in steady state (statistics, visibility map), and not competing with
        # the requests timed below.
        cursor.execute(f"VACUUM ANALYZE {ProcessTracker._meta.db_table}")
    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    timings = {}
    for label, query in [
        ("all", ""),
        ("failed", "?status__exact=FAILED"),
        ("type+status", "?task_type=bench.noop&status__exact=FAILED"),
    ]:
        url = "/admin/tracker/processtracker/" + query
        assert client.get(url).status_code == 200
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            client.get(url)
            samples.append((time.perf_counter() - t) * 1000)
        timings[label] = round(statistics.median(samples), 1)
    record("admin_task_list_ms", max(timings.values()), "ms", rows=n, pages=timings)


def _noop_rate(n: int, workers: int, **env) -> float:
    """No-op tasks per second of a fresh cluster (queued first; rate from the rows' own timestamps)."""
    from django.db.models import Max, Min

    from tracker import services
    from tracker.models import ProcessTracker

    ProcessTracker.objects.filter(task_type="bench.noop").delete()
    with services.transaction.atomic():
        for offset in range(0, n, 10_000):
            services.task_create_many(
                [services.TaskSpec("bench.noop", {"i": i}) for i in range(offset, min(n, offset + 10_000))]
            )
    done = ProcessTracker.objects.filter(task_type="bench.noop", status="COMPLETED")
    with Cluster(Q_WORKERS=workers, **env):
        wait_for(lambda: done.count() >= n, 900, "no-op tasks", interval=0.2)
    span = done.aggregate(first=Min("processing_started_at"), last=Max("completed_at"))
    return n / (span["last"] - span["first"]).total_seconds()


def bench_counters_cost(scale: float, workers: int) -> None:
    """The tracker no-op rate with the counters (finished-task upserts, status-count triggers) and without them
    (TRACKER_COUNTERS=0 and the task table's triggers disabled), in the same run: a discarded warm-up round sizes
    the backlog so that a round lasts at least COUNTERS_ROUND_SECONDS, then rounds alternate off, on, on, off, off,
    on (a drift of the machine's load weighs on both sides alike), each from vacuumed tables after a checkpoint;
    the medians of each side and their ratio (below scale 0.1, a smoke run: one round each). The status counts are
    rebuilt from the rows afterwards."""
    from django.db import connection

    from tracker import counters

    def round_rate(mode: str, n: int) -> float:
        # Every round starts from the same tables: the last round's rows deleted and vacuumed, and a checkpoint
        # (without this, the dead rows of earlier rounds and autovacuum's catching up slowed later rounds 2-3x).
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE process_tracker {'ENABLE' if mode == 'on' else 'DISABLE'} TRIGGER USER")
            cursor.execute("DELETE FROM process_tracker WHERE task_type = 'bench.noop'")
            for table in ("process_tracker", "audit_transition", counters.COUNTER, counters.DELTA, counters.COUNT):
                cursor.execute(f"VACUUM ANALYZE {table}")
            cursor.execute("CHECKPOINT")
        return _noop_rate(n, workers, TRACKER_COUNTERS="1" if mode == "on" else "0")

    n = max(2000, int(100_000 * scale))
    rates = {"on": [], "off": []}
    try:
        rounds = COUNTERS_ROUNDS[:2]  # a smoke run (scale < 0.1): one round each, no warm-up
        if scale >= 0.1:
            rounds = COUNTERS_ROUNDS
            warm = round_rate("on", n)
            n = max(n, int(warm * COUNTERS_ROUND_SECONDS * 1.2))
            log(f"no-op warm-up (counters on): {warm:,.0f}/s; {n:,} tasks per round")
        for mode in rounds:
            rates[mode].append(round_rate(mode, n))
            log(f"no-op rate, counters {mode}: {rates[mode][-1]:,.0f}/s")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE process_tracker ENABLE TRIGGER USER")
            cursor.execute(
                f"DELETE FROM {counters.DELTA}; DELETE FROM {counters.COUNT};"
                f" INSERT INTO {counters.COUNT} (tenant, queue, task_type, status, n)"
                f" SELECT tenant, queue, task_type, status, count(*) FROM process_tracker"
                f" GROUP BY tenant, queue, task_type, status"
            )
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    pairs = [round(a / b, 3) for a, b in zip(rates["on"], rates["off"], strict=True)]  # adjacent rounds
    log(
        f"no-op rate, counters on / off: {on:,.0f} / {off:,.0f} = {on / off:.3f} (medians of {len(rates['on'])});"
        f" adjacent rounds' ratios {pairs}"
    )
    record("tracker_noop_counters_on_per_s", on, "tasks/s", runs=[round(r) for r in rates["on"]], tasks=n, pairs=pairs)
    record("tracker_noop_counters_off_per_s", off, "tasks/s", runs=[round(r) for r in rates["off"]], tasks=n)


COUNTERS_ROUND_SECONDS = 5
COUNTERS_ROUNDS = ("off", "on", "on", "off", "off", "on")


def _fill_counters(finished: int) -> None:
    """`finished` tasks spread over the retention window as the counters hold them: minute rows for the last
    COUNTER_MINUTES_HOURS (2 workers, 5 types, 4 outcomes, 3 tenants), hourly rows before, up to 90 days."""
    from django.conf import settings
    from django.db import connection

    minutes = settings.TRACKER["COUNTER_MINUTES_HOURS"] * 60
    hours = settings.TRACKER["COUNTER_RETENTION_DAYS"] * 24 - settings.TRACKER["COUNTER_MINUTES_HOURS"]
    combos = 2 * 5 * 4 * 3
    per_row = max(1, finished // (minutes * combos + hours * combos // 2))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO tracker_task_counter (resolution, bucket, tenant, task_type, queue, outcome, worker, count,
                                              run_seconds, wait_seconds, run_max)
            SELECT 60, date_trunc('minute', now()) - (m || ' minutes')::interval, 'm' || t, 'bench.type' || ty,
                   'default', (ARRAY['completed','failed','retried','cancelled'])[o], 'host:1:slot' || w,
                   %s, %s * 0.01, %s * 0.002, 0.5
            FROM generate_series(0, %s - 1) m, generate_series(0, 2) t, generate_series(0, 4) ty,
                 generate_series(1, 4) o, generate_series(0, 1) w
            ON CONFLICT DO NOTHING""",
            [per_row, per_row, per_row, minutes],
        )
        cursor.execute(
            """
            INSERT INTO tracker_task_counter (resolution, bucket, tenant, task_type, queue, outcome, worker, count,
                                              run_seconds, wait_seconds, run_max)
            SELECT 3600, date_trunc('hour', now()) - ((h + %s) || ' hours')::interval, 'm' || t, 'bench.type' || ty,
                   'default', (ARRAY['completed','failed','retried','cancelled'])[o], '', %s, %s * 0.01, %s * 0.002, 1
            FROM generate_series(1, %s) h, generate_series(0, 2) t, generate_series(0, 4) ty, generate_series(1, 4) o
            ON CONFLICT DO NOTHING""",
            [settings.TRACKER["COUNTER_MINUTES_HOURS"], per_row * 2, per_row * 2, per_row * 2, hours],
        )
        cursor.execute("SELECT sum(count), count(*) FROM tracker_task_counter")
        total, rows = cursor.fetchone()
        cursor.execute("VACUUM ANALYZE tracker_task_counter")
    log(f"counters hold {total:,} finished tasks in {rows:,} rows")
    return int(total)


def bench_observe(scale: float) -> None:
    """What operators and scrapes read, at 1,000,000 tasks (the admin step's rows, or as many inserted here)
    and 10,000,000 finished in the counters' retention: task_stats, /api/tasks/stats/, /metrics, the dashboard
    (hour, day, week) and the queue list; median of five requests each."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from tracker import counters, services
    from tracker.models import ProcessTracker

    n = max(1000, int(1_000_000 * scale))
    have = ProcessTracker.objects.count()
    if have < n:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                """
                INSERT INTO process_tracker (task_id, task_type, queue, priority, tenant, payload, status, attempts,
                    max_attempts, run_after, locked_by, last_error, error_details, created_at, updated_at)
                SELECT gen_random_uuid(), 'bench.noop', 'default', 100, 'm' || (i %% 50), jsonb_build_object('i', i),
                    (ARRAY['COMPLETED','COMPLETED','COMPLETED','FAILED','CANCELLED','PENDING'])[1 + i %% 6], 1, 10,
                    now() + interval '1 day', '', '', '', now() - (i || ' seconds')::interval, now()
                FROM generate_series(1, %s) i""",
                [n - have],
            )
            cursor.execute("VACUUM ANALYZE process_tracker")
    counters.compact()
    finished = _fill_counters(max(10_000, int(10_000_000 * scale)))
    counters.rollup()  # as the maintenance schedule does every minute: the ended hours rolled up, totals folded
    user, _ = get_user_model().objects.get_or_create(
        username="bench-ops", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)

    def timed(fn) -> float:
        fn()
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t) * 1000)
        return round(statistics.median(samples), 1)

    def get(url):
        return lambda: client.get(url).status_code == 200 or (_ for _ in ()).throw(AssertionError(url))

    tasks = ProcessTracker.objects.count()
    record("task_stats_ms", timed(lambda: services.task_stats()), "ms", tasks=tasks, finished=finished)
    record("api_task_stats_ms", timed(get("/api/tasks/stats/")), "ms", tasks=tasks)
    record("metrics_scrape_ms", timed(get("/metrics")), "ms", tasks=tasks, bytes=len(client.get("/metrics").content))
    pages = {r: timed(get(f"/admin/?range={r}")) for r in ("hour", "day", "week")}
    record("dashboard_ms", max(pages.values()), "ms", tasks=tasks, pages=pages)
    record("queue_list_ms", timed(get("/api/queues/")), "ms", tasks=tasks)


def _ledger(name: str):
    """A fresh merchant with a receivable (DEBIT_NORMAL) and a bank (CREDIT_NORMAL) account and a rule."""
    from recon.models import Account, Merchant, ReconRule

    merchant = Merchant.objects.create(merchant_id=f"bench-{name}-{int(time.time())}", merchant_name=name)
    payments = Account.objects.create(
        merchant=merchant, account_name="Payments", account_type="DEBIT_NORMAL", currency="USD"
    )
    bank = Account.objects.create(merchant=merchant, account_name="Bank", account_type="CREDIT_NORMAL", currency="USD")
    ReconRule.objects.create(merchant=merchant, account_one=payments, account_two=bank)
    return merchant, payments, bank


def _csv(path: Path, n: int, prefix: str) -> Path:
    with path.open("w") as f:
        f.write("order_id,amount,currency,transaction_date,type\n")
        for i in range(n):
            f.write(f"{prefix}{i},{10 + i % 997}.{i % 100:02d},USD,2026-11-{1 + i % 28:02d},Payment\n")
    return path


def _staff_client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    return client


def _upload(client, account, path: Path, mode: str) -> str:
    with path.open("rb") as f:
        response = client.post(
            f"/api/accounts/{account.pk}/staging-entries/files/?force=true", {"file": f, "processing_mode": mode}
        )
    assert response.status_code == 202, response.content[:500]
    return response.json()["job_id"]


def _cluster_rss_kb(cluster: "Cluster") -> int:
    """Peak resident set (VmHWM) of the largest process of the cluster's process group."""
    peak = 0
    for pid in cluster.pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            peak = max(peak, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
        except (OSError, AttributeError):
            pass
    return peak


def bench_recon(scale: float) -> None:
    """Recon end to end: TRANSACTION rows uploaded as CSV until every entry is PROCESSED, then the
    CONFIRMATION rows that match them."""
    from recon.models import StagingEntry

    n = max(200, int(100_000 * scale))
    _, payments, bank = _ledger("e2e")
    client = _staff_client()
    for mode, account in (("TRANSACTION", payments), ("CONFIRMATION", bank)):
        path = _csv(OUT / f"recon-{mode.lower()}.csv", n, "ord-")
        start = time.perf_counter()
        _upload(client, account, path, mode)
        done = StagingEntry.objects.filter(account=account, status="PROCESSED")
        wait_for(lambda: done.count() >= n, 1800, f"{mode} entries processed", interval=0.2)
        elapsed = time.perf_counter() - start
        review = StagingEntry.objects.filter(account=account).exclude(status="PROCESSED").count()
        record(f"recon_{mode.lower()}_entries_per_s", n / elapsed, "entries/s", entries=n, not_processed=review)


def bench_grouped(scale: float) -> None:
    """One-to-many end to end: 1,000 payouts of 100 payments each (at scale 1). The payments (TRANSACTION, each
    with its payout_id) are written by the COPY producer and processed; then the payouts (CONFIRMATION, each 1%
    short: the fee, booked pro rata) are written and timed until every payout is PROCESSED. The figure counts the
    expectations settled per second, to compare with the 1:1 CONFIRMATION rate of the same run."""
    import datetime as dt
    from decimal import Decimal

    from recon import services
    from recon.models import Account, ReconRule, StagingEntry, Transaction

    payouts, size = max(10, int(1000 * scale)), 100
    merchant, payments, bank = _ledger("grouped")
    fees = Account.objects.create(merchant=merchant, account_name="Fees", account_type="DEBIT_NORMAL", currency="USD")
    ReconRule.objects.filter(account_one=payments).update(
        match_mode="one_to_many",
        group_key="payout_id",
        confirmation_key="payout_id",
        amount_tolerance_pct=Decimal("1.5"),
        difference_account=fees,
    )
    when = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    amounts = {
        p: [Decimal(10 + (p * size + i) % 997) + Decimal((p + i) % 100) / 100 for i in range(size)]
        for p in range(payouts)
    }
    start = time.perf_counter()
    for first in range(0, payouts, 100):  # chunks of 10,000 rows
        services.staging_entries_create_rows(
            account=payments,
            rows=[
                ("DEBIT", amount, "USD", when, "TRANSACTION", {"order_id": f"pay-{p}-{i}", "payout_id": f"po-{p}"})
                for p in range(first, min(first + 100, payouts))
                for i, amount in enumerate(amounts[p])
            ],
        )
    done = StagingEntry.objects.filter(account=payments, status="PROCESSED")
    wait_for(lambda: done.count() >= payouts * size, 1800, "payments processed", interval=0.2)
    record(
        "grouped_payments_entries_per_s",
        payouts * size / (time.perf_counter() - start),
        "entries/s",
        entries=payouts * size,
    )
    start = time.perf_counter()
    services.staging_entries_create_rows(
        account=bank,
        rows=[
            (
                "CREDIT",
                (sum(amounts[p]) * Decimal("0.99")).quantize(Decimal("0.01")),
                "USD",
                when,
                "CONFIRMATION",
                {"payout_id": f"po-{p}"},
            )
            for p in range(payouts)
        ],
    )
    settled = StagingEntry.objects.filter(account=bank).exclude(status="PENDING")
    wait_for(lambda: settled.count() >= payouts, 1800, "payouts processed", interval=0.2)
    elapsed = time.perf_counter() - start
    review = StagingEntry.objects.filter(account=bank).exclude(status="PROCESSED").count()
    posted = Transaction.objects.filter(merchant=merchant, status="POSTED").count()
    record(
        "recon_one_to_many_expectations_per_s",
        payouts * size / elapsed,
        "expectations/s",
        payouts=payouts,
        expectations=payouts * size,
        posted=posted,
        not_processed=review,
    )


def bench_latency(scale: float) -> None:
    """Staging entries posted one by one over the API at a low rate: time until each is PROCESSED."""
    from recon.models import StagingEntry

    n = max(20, int(500 * scale))
    _, payments, _ = _ledger("latency")
    client = _staff_client()
    samples = []
    for i in range(-3, n):  # three warm-up entries first (URL conf, serializers, connections), not counted
        start = time.perf_counter()
        response = client.post(
            f"/api/accounts/{payments.pk}/staging-entries/",
            {
                "entry_type": "DEBIT",
                "amount": "12.34",
                "currency": "USD",
                "effective_date": "2026-11-01",
                "processing_mode": "TRANSACTION",
                "metadata": {"order_id": f"lat-{i}"},
            },
            content_type="application/json",
        )
        assert response.status_code == 201, response.content
        entry = StagingEntry.objects.filter(pk=response.json()["staging_entry_id"])
        wait_for(lambda: entry.filter(status="PROCESSED").exists(), 30, "processing", interval=0.002)
        if i >= 0:
            samples.append((time.perf_counter() - start) * 1000)
        time.sleep(0.05)  # a low rate: the cluster is idle when the next entry arrives
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    record("latency_p50_ms", statistics.median(samples), "ms", entries=n)
    record("latency_p99_ms", p99, "ms", entries=n)


def bench_workflows(scale: float) -> None:
    """Workflows on the shared cluster. (1) `jobs.diamond` runs with sleep_seconds=0 started one by one over the
    API on an idle cluster: POST to COMPLETED. (2) Runs of the 10-step `bench.fan10` created at once (1,000 at
    scale 1): steps completed per second, from the steps' own timestamps (first start to last finish), and the
    ratio to the tracker's no-op rate measured in the same run."""
    from django.db.models import Max, Min

    from jobs import services as job_services
    from jobs.models import Job, WorkflowStep

    client = _staff_client()
    n = max(10, int(200 * scale))
    samples = []
    for i in range(-3, n):  # three warm-up runs first, not counted
        start = time.perf_counter()
        response = client.post(
            "/api/jobs/", {"job_type": "jobs.diamond", "params": {"sleep_seconds": 0}}, content_type="application/json"
        )
        assert response.status_code == 201, response.content
        run = Job.objects.filter(pk=response.json()["job_id"])
        wait_for(lambda: run.filter(state="COMPLETED").exists(), 30, "diamond run", interval=0.002)
        if i >= 0:
            samples.append((time.perf_counter() - start) * 1000)
        time.sleep(0.05)  # idle cluster when the next run starts
    samples.sort()
    record("workflow_diamond_p50_ms", statistics.median(samples), "ms", runs=n)
    record("workflow_diamond_p99_ms", samples[min(len(samples) - 1, int(len(samples) * 0.99))], "ms", runs=n)

    runs = max(10, int(1000 * scale))
    commits_before = _database_commits()
    with job_services.transaction.atomic():  # committed together: every root step is due at once
        ids = [job_services.job_create(job_type="bench.fan10", params={}).pk for _ in range(runs)]
    finished = Job.objects.filter(pk__in=ids, state__in=["COMPLETED", "FAILED", "CANCELLED"])
    wait_for(lambda: finished.count() >= runs, 1800, "fan10 runs", interval=0.2)
    steps = WorkflowStep.objects.filter(job_id__in=ids)
    span = steps.aggregate(first=Min("started_at"), last=Max("finished_at"))
    elapsed = (span["last"] - span["first"]).total_seconds()
    done = steps.filter(state="COMPLETED").count()
    time.sleep(1.1)  # backends report their transaction counts at most once a second
    commits = _database_commits() - commits_before
    record(
        "workflow_steps_per_s",
        done / elapsed,
        "steps/s",
        runs=runs,
        steps=done,
        failed_runs=Job.objects.filter(pk__in=ids).exclude(state="COMPLETED").count(),
        commits_per_step=round(commits / max(1, done), 2),
    )


def _database_commits() -> int:
    """Transactions committed in the bench database so far, by every process (pg_stat_database): the whole
    cluster's commits, its polls and heartbeats included."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def bench_import(scale: float, cluster: "Cluster") -> None:
    """CSV import of a large file: rows per second from upload to the job's end (staging entries and their
    tasks written), and the peak RSS during the import of the cluster's largest process (the importing worker
    among them). The other consumer processes the imported entries meanwhile, as in production; the step runs
    last in the shared cluster, which is then stopped with that backlog left."""
    from jobs.models import Job

    n = max(1000, int(1_000_000 * scale))
    _, payments, _ = _ledger("import")
    path = _csv(OUT / "import.csv", n, "imp-")
    client = _staff_client()
    cluster.rss_reset()
    start = time.perf_counter()
    job_id = _upload(client, payments, path, "TRANSACTION")
    job = Job.objects.filter(pk=job_id)
    wait_for(
        lambda: job.filter(state__in=["COMPLETED", "FAILED", "CANCELLED"]).exists(), 1800, "import job", interval=0.2
    )
    elapsed = time.perf_counter() - start
    rss = _cluster_rss_kb(cluster)
    state = job.values_list("state", flat=True).get()
    record("csv_import_rows_per_s", n / elapsed, "rows/s", rows=n, job=state, **_job_times(job))
    record("csv_import_peak_rss_mb", rss / 1024, "MB", rows=n)


def _job_times(job) -> dict:
    """How long the import job waited for a worker (created to started) and ran (started to finished), seconds."""
    created, started, finished = job.values_list("created_at", "started_at", "finished_at").get()
    return {
        "queued_s": round((started - created).total_seconds(), 1),
        "ran_s": round((finished - started).total_seconds(), 1),
    }


def _statement_file(path: Path, fmt: str, n: int) -> Path:
    """A generated statement of `n` lines (one statement, balances that add up), written as it goes."""
    total = 0
    with path.open("w") as f:
        if fmt == "camt053":
            f.write(
                '<?xml version="1.0" encoding="UTF-8"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:'
                'camt.053.001.02"><BkToCstmrStmt><GrpHdr><MsgId>B</MsgId></GrpHdr><Stmt><Id>BENCH</Id>'
                "<Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>\n"
            )
            for i in range(n):
                cents = 1000 + i % 99_000
                total += cents
                f.write(
                    f'<Ntry><Amt Ccy="USD">{cents // 100}.{cents % 100:02d}</Amt><CdtDbtInd>CRDT</CdtDbtInd>'
                    f"<Sts>BOOK</Sts><BookgDt><Dt>2026-11-{1 + i % 28:02d}</Dt></BookgDt>"
                    f"<AcctSvcrRef>B{i}</AcctSvcrRef><NtryDtls><TxDtls><Refs><EndToEndId>E{i}</EndToEndId>"
                    f"</Refs><RmtInf><Ustrd>stmt-{i} payout</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>\n"
                )
            f.write("</Stmt></BkToCstmrStmt></Document>\n")
        else:
            f.write(":20:BENCH\n:25:DE89370400440532013000\n:28C:1/1\n:60F:C261031USD0,00\n")
            for i in range(n):
                cents = 1000 + i % 99_000
                total += cents
                f.write(
                    f":61:2611{1 + i % 28:02d}C{cents // 100},{cents % 100:02d}NTRFNONREF//B{i}\n"
                    f":86:?20stmt-{i} payout\n"
                )
            f.write(f":62F:C261128USD{total // 100},{total % 100:02d}\n-\n")
    return path


def bench_statement_import(scale: float, cluster: "Cluster", fmt: str) -> None:
    """A bank statement of 200,000 lines (camt.053 or MT940) imported like the CSV: lines per second from upload
    to the job's end (both passes: the check, then the write), and the cluster's peak RSS meanwhile."""
    from jobs.models import Job

    n = max(1000, int(200_000 * scale))
    _, payments, _ = _ledger(f"stmt-{fmt}")
    path = _statement_file(OUT / f"statement.{fmt}", fmt, n)
    client = _staff_client()
    cluster.rss_reset()
    start = time.perf_counter()
    job_id = _upload(client, payments, path, "TRANSACTION")
    job = Job.objects.filter(pk=job_id)
    wait_for(
        lambda: job.filter(state__in=["COMPLETED", "FAILED", "CANCELLED"]).exists(), 1800, f"{fmt} import", interval=0.2
    )
    elapsed = time.perf_counter() - start
    state, result = job.values_list("state", "result").get()
    assert state == "COMPLETED" and result["successful_ingestions"] == n, (state, result and result.get("errors"))
    record(f"{fmt}_import_lines_per_s", n / elapsed, "lines/s", lines=n, bytes=path.stat().st_size, **_job_times(job))
    record(f"{fmt}_import_peak_rss_mb", _cluster_rss_kb(cluster) / 1024, "MB", lines=n)


def bench_import_alone(scale: float) -> None:
    """Where the import's time goes: the same number of rows imported with no cluster running, by one writer
    process (`bench.import_writer`), then split over two writers at once (the machine's ceiling with every core
    writing). Each figure carries the CPU per row of the writers and of their PostgreSQL backends."""
    n = max(1000, int(1_000_000 * scale))
    _, payments, _ = _ledger("import-alone")
    for writers in (1, 2):
        paths = [_csv(OUT / f"import-alone-{i}.csv", n // writers, f"alone{writers}-{i}-") for i in range(writers)]
        start_at = time.time() + 3  # after every writer's start-up
        procs = [
            subprocess.Popen(
                [PY, "-m", "bench.import_writer", str(p), str(payments.pk), str(start_at)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for p in paths
        ]
        outs = [p.communicate()[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), "an import writer failed"
        outs = [json.loads(out.strip().splitlines()[-1]) for out in outs]
        rows = sum(o["rows"] for o in outs)

        def per_row(key: str) -> float | None:  # µs per row, over all writers
            return None if any(o[key] is None for o in outs) else round(sum(o[key] for o in outs) / rows * 1e6, 1)

        record(
            f"csv_import_alone_{writers}_writer{'s' if writers > 1 else ''}_rows_per_s",
            rows / max(o["seconds"] for o in outs),
            "rows/s",
            rows=rows,
            python_cpu_us_per_row=per_row("python_cpu_seconds"),
            postgres_cpu_us_per_row=per_row("postgres_cpu_seconds"),
        )


def bench_balance(scale: float) -> None:
    """GET /api/accounts/{id}/balances/ for an account with many entries (median of 7)."""
    from django.db import connection

    from recon.models import Entry, Transaction

    n = max(1000, int(1_000_000 * scale))
    merchant, payments, bank = _ledger("balance")
    txn = Transaction.objects.create(
        logical_transaction_id=f"{payments.pk}:bulk",
        version=1,
        status="POSTED",
        amount=1,
        currency="USD",
        merchant=merchant,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Entry._meta.db_table} (entry_id, transaction_id, account_id, entry_type, amount, currency,
                status, effective_date, metadata, created_at)
            SELECT gen_random_uuid(), %s, %s, (ARRAY['DEBIT','CREDIT'])[1 + i %% 2], 1 + (i %% 1000) / 100.0, 'USD',
                (ARRAY['POSTED','POSTED','EXPECTED','ARCHIVED'])[1 + i %% 4], now(), '{{}}', now()
            FROM generate_series(1, %s) i""",
            [txn.pk, payments.pk, n],
        )
        cursor.execute(f"VACUUM ANALYZE {Entry._meta.db_table}")
    client = _staff_client()
    url = f"/api/accounts/{payments.pk}/balances/"
    assert client.get(url).status_code == 200
    samples = []
    for _ in range(7):
        t = time.perf_counter()
        client.get(url)
        samples.append((time.perf_counter() - t) * 1000)
    record("account_balance_ms", statistics.median(samples), "ms", entries=n)


def bench_review_search(scale: float) -> None:
    """The admin review queue searched by a metadata value (`?queue=review&q=ord-...`: the figure) with many
    staging entries, 1% of them in review: median response time of 5 requests, plus the search statement's own
    execution time from EXPLAIN ANALYZE (partial GIN index recon_staging_meta_values). For comparison, the same
    search over every status (`?q=`, reads the table) and the review queue's first page."""
    from django.db import connection

    from recon.admin import metadata_search
    from recon.models import StagingEntry

    n = max(1000, int(1_000_000 * scale))
    merchant, payments, bank = _ledger("review")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {StagingEntry._meta.db_table} (staging_entry_id, account_id, entry_type, amount, currency,
                effective_date, processing_mode, status, metadata, request_hash, created_at, updated_at)
            SELECT gen_random_uuid(), %s, 'CREDIT', 1 + (i %% 1000) / 100.0, 'USD',
                now() - (i %% 30 || ' days')::interval,
                'CONFIRMATION', CASE WHEN i %% 100 = 0 THEN 'NEEDS_MANUAL_REVIEW' ELSE 'PROCESSED' END,
                CASE WHEN i %% 100 = 0 THEN jsonb_build_object('order_id', 'ord-' || i, 'source_file', 'bench.csv',
                    'error', 'No expected entry with order_id', 'error_type', 'NoMatchFoundError')
                ELSE jsonb_build_object('order_id', 'ord-' || i, 'source_file', 'bench.csv',
                    'match_type', 'Fulfilled') END,
                '', now() - (i || ' seconds')::interval, now()
            FROM generate_series(1, %s) i""",
            [bank.pk, n],
        )
        cursor.execute(f"VACUUM ANALYZE {StagingEntry._meta.db_table}")
        target = f"ord-{(n // 200) * 100}"  # an entry in review, mid-table
        sql, params = metadata_search(StagingEntry.objects.order_by(), target, within="review").query.sql_with_params()
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
        plan = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
    client = _staff_client()
    timings = {}
    for label, query in [
        ("review+q", f"?queue=review&q={target}"),
        ("all+q", f"?q={target}"),
        ("review", "?queue=review"),
    ]:
        url = "/admin/recon/stagingentry/" + query
        response = client.get(url)
        assert response.status_code == 200 and (label == "review" or target in response.content.decode()), url
        samples = []
        for _ in range(5):
            t = time.perf_counter()
            client.get(url)
            samples.append((time.perf_counter() - t) * 1000)
        timings[label] = round(statistics.median(samples), 1)

    def indexes(node: dict) -> list[str]:
        return ([node["Index Name"]] if "Index Name" in node else []) + [
            name for child in node.get("Plans", []) for name in indexes(child)
        ]

    record(
        "admin_review_search_ms",
        timings["review+q"],
        "ms",
        rows=n,
        pages=timings,
        search_sql_ms=round(plan["Execution Time"], 2),
        indexes=sorted(set(indexes(plan["Plan"]))),
    )


# --- report -------------------------------------------------------------------------------------------------

RATIOS = {
    "tracker no-op / django-q2 alone": ("tracker_noop_tasks_per_s", "djangoq_noop_tasks_per_s"),
    "tracker no-op / procrastinate": ("tracker_noop_tasks_per_s", "procrastinate_noop_tasks_per_s"),
    "recon TRANSACTION / pgbench tps": ("recon_transaction_entries_per_s", "pgbench_tpcb_tps"),
    "recon CONFIRMATION / pgbench tps": ("recon_confirmation_entries_per_s", "pgbench_tpcb_tps"),
    # issue 15: >= 0.7 (expectations settled by payouts per second / 1:1 confirmations per second)
    "recon one_to_many / 1:1 CONFIRMATION": (
        "recon_one_to_many_expectations_per_s",
        "recon_confirmation_entries_per_s",
    ),
    "tracker no-op, counters on / off": ("tracker_noop_counters_on_per_s", "tracker_noop_counters_off_per_s"),
    "camt.053 import / CSV import": ("camt053_import_lines_per_s", "csv_import_rows_per_s"),
    "MT940 import / CSV import": ("mt940_import_lines_per_s", "csv_import_rows_per_s"),
    "workflow steps / tracker no-op": ("workflow_steps_per_s", "tracker_noop_tasks_per_s"),
}


def run_ratios(results: dict) -> dict:
    """The ratios of one run (figures measured in the same run, on the same server)."""
    return {
        name: round(results[a]["value"] / results[b]["value"], 2)
        for name, (a, b) in RATIOS.items()
        if a in results and b in results and results[b]["value"]
    }


def medians(runs: list[dict]) -> tuple[dict, dict]:
    """Per figure and per ratio: the median over the runs (the details of the last run, every run's value)."""
    results = {}
    for key in runs[-1]:
        values = [r[key]["value"] for r in runs if key in r]
        results[key] = {
            **runs[-1][key],
            "value": round(statistics.median(values), 3),
            **({"runs": values} if len(runs) > 1 else {}),
        }
    per_run = [run_ratios(r) for r in runs]
    ratios = {
        name: round(statistics.median([r[name] for r in per_run if name in r]), 2)
        for name in RATIOS
        if any(name in r for r in per_run)
    }
    return results, ratios


def report(scale: float, runs: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    results, ratios = medians(runs)
    title = f"Benchmarks (scale {scale}" + (f", medians of {len(runs)} runs)" if len(runs) > 1 else ")")
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("detail")
    for key, r in results.items():
        detail = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("value", "unit"))
        table.add_row(key, f"{r['value']:,.1f}", r["unit"], detail)
    for name, value in ratios.items():
        table.add_row(name, f"{value:,.2f}", "x", "")
    Console().print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    payload = {
        "scale": scale,
        "runs": len(runs),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "results": results,
        "ratios": ratios,
        "at": stamp,
    }
    (OUT / f"bench-{stamp}.json").write_text(json.dumps(payload, indent=2))
    (OUT / "latest.json").write_text(json.dumps(payload, indent=2))
    log(f"wrote var/bench/bench-{stamp}.json")


STEPS = [
    "pgbench",
    "recon",
    "grouped",
    "latency",
    "tracker",
    "workflows",
    "import",
    "camt053",
    "mt940",
    "import_alone",
    "djangoq",
    "procrastinate",
    "counters",
    "admin",
    "observe",
    "balance",
    "review_search",
]
# Steps that run in one shared tracker cluster (started once, in this order; the imports leave a backlog, so last).
CLUSTER_STEPS = ("recon", "grouped", "latency", "tracker", "workflows", "import", "camt053", "mt940")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2, help="cluster size (django-q2 workers)")
    parser.add_argument("--only", nargs="*", choices=STEPS, help="run only these steps")
    parser.add_argument("--database", default="recon_bench", help="database to (re)create on the server")
    parser.add_argument("--runs", type=int, default=1, help="repeat the suite; the table shows medians")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit("bench needs PostgreSQL in DATABASE_URL (use `make bench`)")
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ["DATABASE_URL"] = recreate_database(args.database)
    os.environ["TRACKER_TASK_MODULES"] = "bench.handlers"
    os.environ["JOBS_MODULES"] = "bench.workflows"
    os.environ["DJANGO_DEBUG"] = "0"  # as in production: no query log in every process
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,localhost")
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True)
    import django

    django.setup()
    steps = [s for s in STEPS if s in (args.only or STEPS)]
    runs = []
    for run in range(args.runs):
        if run:  # each run on a fresh database
            from django.db import connections

            connections.close_all()
            recreate_database(args.database)
            subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True)
        log(f"run {run + 1} of {args.runs}")
        RESULTS.clear()
        run_steps(steps, args)
        runs.append(dict(RESULTS))
    report(args.scale, runs)
    return 0


def run_steps(steps: list[str], args) -> None:
    """Runs the steps in STEPS order; the CLUSTER_STEPS share one cluster."""
    cluster = None
    runners = {
        "pgbench": lambda: bench_pgbench(args.scale),
        "tracker": lambda: bench_tracker_noop(args.scale, args.workers),
        "djangoq": lambda: bench_djangoq_noop(args.scale, args.workers),
        "procrastinate": lambda: bench_procrastinate_noop(args.scale, args.workers),
        "admin": lambda: bench_admin_task_list(args.scale),
        "counters": lambda: bench_counters_cost(args.scale, args.workers),
        "observe": lambda: bench_observe(args.scale),
        "recon": lambda: bench_recon(args.scale),
        "grouped": lambda: bench_grouped(args.scale),
        "latency": lambda: bench_latency(args.scale),
        "workflows": lambda: bench_workflows(args.scale),
        "import": lambda: bench_import(args.scale, cluster),
        "camt053": lambda: bench_statement_import(args.scale, cluster, "camt053"),
        "mt940": lambda: bench_statement_import(args.scale, cluster, "mt940"),
        "import_alone": lambda: bench_import_alone(args.scale),
        "balance": lambda: bench_balance(args.scale),
        "review_search": lambda: bench_review_search(args.scale),
    }
    try:
        for step in steps:
            if step in CLUSTER_STEPS and cluster is None:
                cluster = Cluster(Q_WORKERS=args.workers)
                wait_for(lambda: consumers_alive(args.workers), 60, "tracker consumers")
            elif step not in CLUSTER_STEPS and cluster is not None:
                cluster.stop()
                cluster = None
            log(f"step {step}")
            runners[step]()
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
