"""The benchmark suite runs end to end at a tiny size, so it cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_suite_runs_at_a_tiny_size():
    env = dict(os.environ)
    env.pop("TRACKER_TASK_MODULES", None)
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--scale", "0.002", "--database", "bench_smoke", "--runs", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((ROOT / "var" / "bench" / "latest.json").read_text())
    results = report["results"]
    for key in [
        "pgbench_tpcb_tps",
        "recon_transaction_entries_per_s",
        "recon_confirmation_entries_per_s",
        "latency_p50_ms",
        "csv_import_rows_per_s",
        "tracker_noop_tasks_per_s",
        "djangoq_noop_tasks_per_s",
        "admin_task_list_ms",
        "account_balance_ms",
        "csv_import_alone_1_writer_rows_per_s",
        "csv_import_alone_2_writers_rows_per_s",
        "tracker_noop_counters_on_per_s",
        "tracker_noop_counters_off_per_s",
        "task_stats_ms",
        "metrics_scrape_ms",
        "dashboard_ms",
        "camt053_import_lines_per_s",
        "mt940_import_lines_per_s",
        "camt053_import_peak_rss_mb",
        "workflow_diamond_p50_ms",
        "workflow_steps_per_s",
        "recon_one_to_many_expectations_per_s",
    ]:
        assert results[key]["value"] > 0, key
    for writers in ("1_writer", "2_writers"):  # the import's CPU per row, split between Python and PostgreSQL
        alone = results[f"csv_import_alone_{writers}_rows_per_s"]
        assert alone["rows"] >= 1000 and alone["python_cpu_us_per_row"] > 0 and alone["postgres_cpu_us_per_row"] > 0
    assert results["recon_transaction_entries_per_s"]["not_processed"] == 0
    assert report["ratios"]["tracker no-op / django-q2 alone"] > 0
    assert report["ratios"]["camt.053 import / CSV import"] > 0 and report["ratios"]["MT940 import / CSV import"] > 0
    assert report["runs"] == 2 and len(results["tracker_noop_tasks_per_s"]["runs"]) == 2  # medians of two runs
