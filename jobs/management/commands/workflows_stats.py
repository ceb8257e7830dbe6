"""Workflow analytics (the selector of GET /api/workflows/stats/)."""

import datetime as dt
import json

from django.core.management.base import BaseCommand
from django.utils import timezone

from jobs.models import Job
from jobs.workflows.selectors import workflow_stats


class Command(BaseCommand):
    help = "Runs and steps by state, retrying/exhausted steps, the slowest steps (p50/p95/max)."

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=float, default=24, help="Window: the last N hours (default 24).")
        parser.add_argument("--workflow", default=None, help="Only this workflow.")
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args, **opts):
        stats = workflow_stats(jobs=Job.objects.all(), since=timezone.now() - dt.timedelta(hours=opts["hours"]),
                               workflow=opts["workflow"])
        if opts["json"]:
            self.stdout.write(json.dumps(stats, default=str, indent=2))
            return
        self.stdout.write(f"since {stats['since']:%Y-%m-%d %H:%M:%S %Z}")
        self.stdout.write("runs:  " + "  ".join(f"{k} {v}" for k, v in stats["runs"].items() if v))
        self.stdout.write("steps: " + "  ".join(f"{k} {v}" for k, v in stats["steps"].items() if v))
        self.stdout.write(f"retrying {stats['retrying']}  exhausted {stats['exhausted']}")
        self.stdout.write(f"{'workflow':<28} {'step':<20} {'runs':>6} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9} "
                          f"{'attempts':>8}")
        for s in stats["slowest_steps"]:
            self.stdout.write(f"{s['workflow']:<28} {s['step']:<20} {s['runs']:>6} {s['p50_ms']:>9} {s['p95_ms']:>9} "
                              f"{s['max_ms']:>9} {s['avg_attempts']:>8}")
