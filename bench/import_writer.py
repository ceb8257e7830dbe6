"""One CSV import in this process, with no job and no cluster (the bench step `import_alone`).

    python -m bench.import_writer CSV_PATH ACCOUNT_ID START_AT

Waits until the epoch time START_AT (so writers started together begin together), runs `recon.ingest.ingest_csv`
(what the import job runs, without its checkpoints) and prints one JSON line: the rows written, the wall time,
and the CPU seconds of this process and of its PostgreSQL backend (read from /proc: the server must run on this
machine, as the bench's own does)."""

import json
import os
import sys
import time


def backend_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, or None when /proc does not show it."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(path: str, account_id: str, start_at: float) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connection

    from recon import ingest
    from recon.models import Account

    account = Account.objects.get(pk=account_id)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    time.sleep(max(0.0, start_at - time.time()))
    pg_start, cpu_start, start = backend_cpu_seconds(backend), time.process_time(), time.perf_counter()
    with open(path) as lines:
        report = ingest.ingest_csv(
            account=account, lines=lines, processing_mode="TRANSACTION", source_file=os.path.basename(path)
        )
    elapsed = time.perf_counter() - start
    pg_end = backend_cpu_seconds(backend)
    print(
        json.dumps(
            {
                "rows": report["successful_ingestions"],
                "seconds": elapsed,
                "python_cpu_seconds": time.process_time() - cpu_start,
                "postgres_cpu_seconds": None if pg_start is None or pg_end is None else pg_end - pg_start,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
