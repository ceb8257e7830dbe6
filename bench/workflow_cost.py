"""What one workflow step costs, in one process: `runs` runs of `bench.fan10` created at once, drained by one tracker
worker here; prints SQL statements per step (every statement through psycopg's cursors, every thread), committed
transactions per step (pg_stat_database, every connection of the process, closed first so their counts are
flushed) and the process's CPU time per step.

    python -m tests.pgserver -- .venv/bin/python -m bench.workflow_cost [runs]"""

import os
import sys
import threading
import time


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["JOBS_MODULES"] = "bench.workflows"
    os.environ["DJANGO_DEBUG"] = "0"
    import django

    django.setup()
    import psycopg
    from django.core.management import call_command
    from django.db import connection, connections

    from jobs import services as job_services
    from jobs.models import WorkflowStep
    from tracker.worker import Worker

    call_command("migrate", verbosity=0)
    statements, lock = [0], threading.Lock()
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany

    def counted(method):
        def wrapper(self, *args, **kwargs):
            with lock:
                statements[0] += 1
            return method(self, *args, **kwargs)

        return wrapper

    # psycopg's cursors (Django's go through them; the engine's prepared statements use them directly)
    psycopg.Cursor.execute, psycopg.Cursor.executemany = counted(execute), counted(executemany)
    phases = _time_phases(lock)

    def commits() -> int:
        connections.close_all()
        time.sleep(1.2)  # closed backends have reported their counts
        with connection.cursor() as cursor:
            cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            return cursor.fetchone()[0]

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        postmaster = _parent(cursor.fetchone()[0])

    with job_services.transaction.atomic():
        ids = [job_services.job_create(job_type="bench.fan10", params={}).pk for _ in range(runs)]
    before, statements[0] = commits(), 0
    server_cpu = _server_cpu(postmaster)
    cpu = time.process_time()
    worker = Worker("cost")
    worker.drain(budget_seconds=600)
    if hasattr(worker, "close"):
        worker.close()
    cpu = time.process_time() - cpu
    queries = statements[0]
    committed = commits() - before - 2  # the two reads of the counter
    server_cpu = _server_cpu(postmaster) - server_cpu
    steps = WorkflowStep.objects.filter(job_id__in=ids, state="COMPLETED").count()
    print(
        f"{steps} steps of {runs} runs: {queries / steps:.2f} statements/step, {committed / steps:.2f} commits/step, "
        f"{1000 * cpu / steps:.2f} ms CPU/step (this process), {1000 * server_cpu / steps:.2f} ms CPU/step (PostgreSQL)"
    )
    for name, (calls, wall, cpu_s) in phases.items():
        print(
            f"  {name:<7} {calls:>5} calls  {1000 * wall / steps:6.2f} ms wall/step"
            f"  {1000 * cpu_s / steps:6.2f} ms CPU/step"
        )
    return 0


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _server_cpu(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster's own and its ended children's (backends that
    exited, reaped by it), plus its live children's (background writer, WAL writer, checkpointer, backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(pid) == postmaster:
            total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _time_phases(lock) -> dict:
    """Wraps the claim, the begin, the step function and the finish with timers (wall: perf_counter; CPU: the
    calling thread's thread_time). Returns {phase: [calls, wall seconds, CPU seconds]}, filled as they run."""
    from jobs.workflows import engine
    from tracker import services

    phases: dict = {}

    def timed(owner, attribute, name):
        original = getattr(owner, attribute)
        phases[name] = [0, 0.0, 0.0]

        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                with lock:
                    entry = phases[name]
                    entry[0] += 1
                    entry[1] += time.perf_counter() - wall
                    entry[2] += time.thread_time() - cpu

        setattr(owner, attribute, wrapper)

    timed(services, "task_claim", "claim")
    timed(engine, "steps_begin_many", "begin")
    timed(engine.Attempt, "call", "call")
    timed(engine, "steps_finish_many", "finish")
    return phases


if __name__ == "__main__":
    sys.exit(main())
