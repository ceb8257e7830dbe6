"""Where a statement import's time goes, in this process (no cluster): a generated statement file stored as an
upload, parsed into its spool (`recon.ingest.statement_spool`) and written (`ingest_statement`), each timed in
Python CPU and in the PostgreSQL backend's CPU (/proc), optionally under cProfile.

    python -m bench.profile_statement FORMAT LINES [--profile] [--repeat N]

`--repeat N` imports N different files (distinct references) into the same account, one after the other, to
show whether a chunk's cost grows with the lines the account already holds. Prints one JSON line per import."""

import argparse
import cProfile
import json
import os
import pstats
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("format", choices=["camt053", "mt940"])
    parser.add_argument("lines", type=int)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from bench.import_writer import backend_cpu_seconds
    from bench.run import _statement_file
    from recon import ingest, uploads
    from recon.models import Account, AccountType, Merchant

    call_command("migrate", verbosity=0)
    merchant = Merchant.objects.create(merchant_id=f"profile-{time.time()}", merchant_name="profile")
    account = Account.objects.create(
        merchant=merchant, account_name="bank", account_type=AccountType.DEBIT_NORMAL, currency="USD"
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    tmp = Path(tempfile.mkdtemp())
    for run in range(args.repeat):
        path = _statement_file(tmp / f"s{run}.{args.format}", args.format, args.lines)
        if run:  # distinct references per file: nothing overlaps
            text = path.read_text().replace(">B", f">R{run}-").replace("//B", f"//R{run}-")
            path.write_text(text)
        with path.open("rb") as f:
            upload = uploads.upload_store(account=account, name=path.name, source=iter(lambda: f.read(1 << 20), b""))
        spool = ingest.statement_spool_path(
            upload_id=upload.pk, fmt=args.format, processing_mode="TRANSACTION", account_type=account.account_type
        )
        profiler = cProfile.Profile() if args.profile else None
        sql_seconds: dict[str, float] = {}

        def timed(execute, sql, params, many, context, sql_seconds=sql_seconds):
            t = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                head = " ".join(sql.split())[:60]
                sql_seconds[head] = sql_seconds.get(head, 0.0) + time.perf_counter() - t

        figures = {}
        for phase in ("parse", "write"):
            pg0, cpu0, t0 = backend_cpu_seconds(backend), time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            if phase == "parse":
                ingest.statement_spool(
                    account=account,
                    fmt=args.format,
                    stream=uploads.open_bytes(upload),
                    processing_mode="TRANSACTION",
                    source_file=upload.name,
                    upload_id=upload.pk,
                    path=spool,
                )
            else:
                with connection.execute_wrapper(timed):
                    report = ingest.ingest_statement(
                        account=account,
                        spool=spool,
                        processing_mode="TRANSACTION",
                        upload_id=upload.pk,
                        on_chunk=lambda done, rep: True,
                    )
            if profiler:
                profiler.disable()
            n = args.lines
            figures[phase] = {
                "wall_us": round(1e6 * (time.perf_counter() - t0) / n, 1),
                "python_us": round(1e6 * (time.process_time() - cpu0) / n, 1),
                "postgres_us": round(1e6 * (backend_cpu_seconds(backend) - pg0) / n, 1),
            }
        ingest.statement_spool_remove(spool)
        sql_us = {k: round(1e6 * v / args.lines, 1) for k, v in sorted(sql_seconds.items(), key=lambda kv: -kv[1])[:8]}
        lines = report["successful_ingestions"]
        print(json.dumps({"run": run, "lines": lines, **figures, "sql_wall_us": sql_us}), flush=True)
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
