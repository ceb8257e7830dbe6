"""Profile of one consumer at the bench's shape, in one process (docs/benchmarks.md, "Where a batch's time goes").

    python -m tests.pgserver --durable -- python -m bench.profile_recon [--n 20000] [--mode CONFIRMATION]

N expectations are written by the COPY producer and processed (TRANSACTION), then N matching confirmations are
written; a `Worker(...).run_once()` loop then processes the measured mode's backlog (the TRANSACTION backlog itself
with `--mode TRANSACTION`) under cProfile. Reported per entry: Python CPU (this process) and PostgreSQL CPU (its
backend, from /proc), the statements per batch by kind (tracker / recon / other) with their wall time, and the
top functions. `--explain` logs one batch's plans (auto_explain, ANALYZE and BUFFERS) to the server's log."""

import argparse
import cProfile
import datetime as dt
import gc
import io
import os
import pstats
import re
import sys
import time
from collections import Counter, defaultdict
from decimal import Decimal

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_DEBUG", "0")

TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """User + system CPU seconds of a local PostgreSQL backend."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def kind_of(sql: str) -> str:
    if re.search(r"\b(process_tracker|tracker_\w+)\b", sql):
        return "tracker"
    if re.search(r"\baudit_transition\b", sql):
        return "audit"
    if re.search(r"\brecon_\w+\b", sql):
        return "recon"
    return "other"


class Phases:
    """Wall, Python CPU and backend CPU per named phase (functions wrapped in place; nested phases count in
    their callers too)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.totals: dict = defaultdict(lambda: [0, 0.0, 0.0, 0.0])

    def wrap(self, module, name: str, label: str) -> None:
        func = getattr(module, name)

        def timed(*args, **kwargs):
            w, c, p = time.perf_counter(), time.process_time(), backend_cpu(self.pid)
            try:
                return func(*args, **kwargs)
            finally:
                t = self.totals[label]
                t[0] += 1
                t[1] += time.perf_counter() - w
                t[2] += time.process_time() - c
                t[3] += backend_cpu(self.pid) - p

        setattr(module, name, timed)

    def report(self, batches: int) -> None:
        print("phases per batch (wall / Python CPU / PostgreSQL CPU, ms):")
        for label, (calls, wall, cpu, pg) in self.totals.items():
            print(
                f"  {label:28} {calls / batches:5.1f}x {wall / batches * 1000:8.1f} {cpu / batches * 1000:8.1f}"
                f" {pg / batches * 1000:8.1f}"
            )


class Counting:
    """A connection execute wrapper: statements and their wall time by (kind, first words)."""

    def __init__(self):
        self.count: Counter = Counter()
        self.seconds: dict = defaultdict(float)

    def __call__(self, execute, sql, params, many, context):
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            words = " ".join(str(sql).split()[:3])[:60]
            key = (kind_of(str(sql)), words)
            self.count[key] += 1
            self.seconds[key] += time.perf_counter() - start


def main() -> int:  # noqa: C901  (a measuring script: one option per branch)
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--mode", default="CONFIRMATION", choices=["CONFIRMATION", "TRANSACTION"])
    parser.add_argument("--batch-size", type=int, default=None, help="fixed claim size (default: adaptive)")
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--dump", help="write the cProfile stats to this file (for pstats)")
    parser.add_argument(
        "--gc", choices=["on", "off", "freeze"], default="on", help="Python's cyclic GC while measuring"
    )
    parser.add_argument("--analyze", action="store_true", help="ANALYZE the database before measuring")
    parser.add_argument("--no-profile", action="store_true", help="phases and statements only (true CPU figures)")
    args = parser.parse_args()

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.db import connection

    from bench.run import _ledger
    from recon import services
    from recon.models import StagingEntry
    from tracker.worker import Worker

    _, payments, bank = _ledger("profile")
    when = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

    def rows(entry_type: str, mode: str) -> list[tuple]:
        return [
            (entry_type, Decimal(10 + i % 997) + Decimal(i % 100) / 100, "USD", when, mode, {"order_id": f"ord-{i}"})
            for i in range(args.n)
        ]

    def drain(worker: Worker) -> tuple[int, list[int]]:
        sizes = []
        while True:
            totals = worker.run_once()
            if not totals.processed:
                return sum(sizes), sizes
            sizes.append(totals.processed)

    for first in range(0, args.n, 10_000):
        services.staging_entries_create_rows(
            account=payments, rows=rows("DEBIT", "TRANSACTION")[first : first + 10_000]
        )
    if args.mode == "CONFIRMATION":
        drain(Worker("profile-setup", batch_size=1000))
        services.staging_entries_create_rows(account=bank, rows=rows("CREDIT", "CONFIRMATION"))
    connection.ensure_connection()
    with connection.cursor() as cursor:
        if args.analyze:
            cursor.execute("ANALYZE")
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
        if args.explain:
            cursor.execute(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;"
                " SET auto_explain.log_buffers = on; SET auto_explain.log_nested_statements = on"
            )
    worker = Worker("profile", batch_size=args.batch_size)
    if args.gc == "off":
        gc.disable()
    elif args.gc == "freeze":
        gc.collect()
        gc.freeze()
    phases = Phases(pid)
    if args.no_profile:
        from recon import engine
        from recon.matching import write
        from tracker import audit, bulk
        from tracker import services as tracker_services
        from tracker import worker as worker_module

        phases.wrap(worker_module.services, "task_claim", "claim (own transaction)")
        phases.wrap(tracker_services, "task_complete_many", "task_complete_many")
        phases.wrap(worker_module.Worker, "run_once", "run_once (all, with commit)")
        phases.wrap(engine, "entries_lock", "load: entries_lock")
        phases.wrap(engine, "batch_load", "load: batch_load")
        phases.wrap(engine, "decide", "decide")
        phases.wrap(engine, "plan_write", "write: plan_write")
        phases.wrap(write, "audit_write", "write: audit_write (COPY)")
        phases.wrap(write, "_transactions_move", "write: transactions move")
        phases.wrap(write, "_versions_insert", "write: versions insert")
        phases.wrap(write, "_staging_outcomes_write", "write: staging outcomes")
        phases.wrap(write, "_legs_write", "write: legs (archive+insert)")
        phases.wrap(audit, "copy_rows", "COPY audit rows (all)")
        phases.wrap(bulk, "copy_rows", "COPY other rows")
    counting = Counting()
    profile = cProfile.Profile()
    cpu0, pg0, wall0 = time.process_time(), backend_cpu(pid), time.perf_counter()
    with connection.execute_wrapper(counting):
        if args.explain:
            worker.run_once()
            sizes = [0]
            total = 0
        else:
            profile.enable() if not args.no_profile else None
            total, sizes = drain(worker)
            profile.disable() if not args.no_profile else None
    cpu, pg, wall = time.process_time() - cpu0, backend_cpu(pid) - pg0, time.perf_counter() - wall0
    if args.explain:
        print("plans logged to the server's log")
        return 0
    left = StagingEntry.objects.filter(account=bank if args.mode == "CONFIRMATION" else payments)
    print(f"statuses: {dict(Counter(left.values_list('status', flat=True)))}")
    batches = len(sizes)
    print(
        f"{args.mode}: {total} entries in {batches} batches (sizes {Counter(sizes).most_common(6)}), wall {wall:.1f} s"
        f" = {total / wall:.0f}/s; CPU per entry: Python {cpu / total * 1e6:.0f} us, PostgreSQL"
        f" {pg / total * 1e6:.0f} us{'' if args.no_profile else ' (under cProfile)'}"
    )
    if args.no_profile:
        phases.report(batches)
    by_kind: dict = defaultdict(lambda: [0, 0.0])
    for key, count in counting.count.items():
        by_kind[key[0]][0] += count
        by_kind[key[0]][1] += counting.seconds[key]
    print("statements per batch by kind (wall ms per batch):")
    for kind, (count, seconds) in sorted(by_kind.items()):
        print(f"  {kind:8} {count / batches:6.1f}  {seconds / batches * 1000:8.1f} ms")
    print("statements (per batch, ms per batch):")
    for key, count in sorted(counting.count.items(), key=lambda kv: -counting.seconds[kv[0]]):
        print(f"  {count / batches:5.1f} {counting.seconds[key] / batches * 1000:8.1f} ms  {key[0]:8} {key[1]}")
    if args.no_profile:
        return 0
    if args.dump:
        profile.dump_stats(args.dump)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
