"""Start a job and follow it with a progress bar until it ends (exit status 1 if it did not complete)."""

import json
import threading
import time

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from config.errors import AppError
from jobs import registry, services
from jobs.management.commands._common import parse_json, parse_value
from jobs.models import STEP_TERMINAL_STATES, TERMINAL_STATES, Job, WorkflowStep


class Command(BaseCommand):
    help = ("Start a job or a workflow run (a bar per step): jobs_start jobs.countdown --param steps=5 "
            "--param step_seconds=0.5")

    def add_arguments(self, parser):
        parser.add_argument("job_type", help="One of the registered types (see --list-types).", nargs="?")
        parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                            help="A parameter; VALUE is read as JSON when it parses (5, true, [1]), else a string.")
        parser.add_argument("--params", help="All parameters as a JSON object (merged under --param).")
        parser.add_argument("--merchant", default="", help="Merchant id the job belongs to.")
        parser.add_argument("--no-follow", action="store_true", help="Print the job id and return at once.")
        parser.add_argument("--run-here", action="store_true",
                            help="Also run a tracker worker in this process (no qcluster needed).")
        parser.add_argument("--timeout", type=float, default=0, help="Stop following after this many seconds.")
        parser.add_argument("--list-types", action="store_true", help="List the job types and exit.")

    def handle(self, *args, **opts):
        if opts["list_types"] or not opts["job_type"]:
            for name in registry.all_types():
                self.stdout.write(f"{name}  {registry.get(name).description}")
            if not opts["list_types"]:
                raise CommandError("Give a job type.")
            return
        params = parse_json(opts["params"], "--params") or {}
        for item in opts["param"]:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CommandError(f"--param {item!r} is not KEY=VALUE.")
            params[key] = parse_value(value)
        try:
            job = services.job_create(job_type=opts["job_type"], params=params, merchant_id=opts["merchant"])
        except AppError as exc:
            raise CommandError(f"{exc.message} {json.dumps(exc.details) if exc.details else ''}".strip()) from None
        if opts["no_follow"]:
            self.stdout.write(str(job.pk))
            return
        stop = threading.Event()
        if opts["run_here"]:
            threading.Thread(target=self._work, args=(stop,), daemon=True).start()
        try:
            job = self._follow(job, opts["timeout"])
        finally:
            stop.set()
        self.stdout.write(json.dumps({"job_id": str(job.pk), "state": job.state, "result": job.result,
                                      "error": job.error or None}, default=str))
        if job.state != "COMPLETED":
            raise CommandError(f"Job {job.pk} ended {job.state}" + (f": {job.error}" if job.error else "")
                               if job.state in TERMINAL_STATES else f"Job {job.pk} is still {job.state}.")

    def _follow(self, job: Job, timeout: float) -> Job:
        console = Console(file=self.stdout, force_terminal=None)
        deadline = time.monotonic() + timeout if timeout else None
        columns = [TextColumn("[bold]{task.fields[state]:<9}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), TextColumn("{task.description}")]
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(job.job_type, total=100, state=job.state)
            step_bars: dict[str, int] = {}  # a workflow run: one bar per step
            while True:
                job = Job.objects.get(pk=job.pk)
                bar.update(task, completed=job.progress, state=job.state,
                           description=job.step or job.wait_signal and f"waiting for {job.wait_signal}" or job.job_type)
                for step in WorkflowStep.objects.filter(job_id=job.pk).order_by("position"):
                    if step.name not in step_bars:
                        step_bars[step.name] = bar.add_task(f"  {step.name}", total=100, state=step.state)
                    done = 100 if step.state in STEP_TERMINAL_STATES else 50 if step.state == "RUNNING" else 0
                    extra = f" (attempt {step.attempts})" if step.attempts > 1 else ""
                    bar.update(step_bars[step.name], completed=done, state=step.state,
                               description=f"  {step.name}{extra}")
                if job.state in TERMINAL_STATES or (deadline and time.monotonic() > deadline):
                    return job
                time.sleep(0.3)

    def _work(self, stop: threading.Event) -> None:
        from django.db import connections

        from tracker.worker import Worker

        worker = Worker()
        try:
            while not stop.is_set():
                if not worker.drain(budget_seconds=5).processed:
                    stop.wait(0.3)
        finally:
            connections.close_all()
