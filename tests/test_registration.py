"""Registration in AppConfig.ready: every registry is filled once per process, and a name registered twice fails
loudly (ImproperlyConfigured) without replacing the first registration."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from jobs import registry as job_registry
from jobs.registry import job_type
from recon.handlers import StagingEntryHandler
from tests.conftest import ROOT
from tracker import registry
from tracker.registry import TaskHandler


def test_a_task_type_registered_twice_fails_and_keeps_the_first():
    first = registry.get(StagingEntryHandler.task_type)

    class Again(TaskHandler):
        task_type = StagingEntryHandler.task_type

    with pytest.raises(ImproperlyConfigured, match="registered twice"):
        registry.register(Again)
    assert registry.get(StagingEntryHandler.task_type) is first


def test_a_job_type_registered_twice_fails_and_keeps_the_first():
    first = job_registry.get("recon.close_period")

    @job_type("recon.close_period")
    def impostor(ctx, params):
        return None

    with pytest.raises(ImproperlyConfigured, match="registered twice"):
        job_registry.register(impostor)
    assert job_registry.get("recon.close_period") is first


def test_a_workflow_cannot_take_a_job_types_name():
    from jobs.workflows import Step, declare

    wf = declare.workflow("recon.close_period", steps=[Step("a", lambda ctx: None)])
    with pytest.raises(ImproperlyConfigured, match="name of a registered job type"):
        declare.register(wf)
    assert job_registry.get("recon.close_period").workflow is None


def test_a_fresh_process_has_every_type_registered_without_importing_their_modules():
    """django.setup() alone (no handler module imported by hand) registers the apps' task and job types."""
    code = (
        "import django; django.setup()\n"
        "from jobs import registry as j; from tracker import registry as t\n"
        "print(sorted(t.all_types())); print(j.all_types())\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "JOBS_DEMO_TYPES": "0"}
    env.pop("TRACKER_TASK_MODULES", None)
    env.pop("JOBS_MODULES", None)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == str(sorted(["JOB_RUN", "JOB_WAKE", "PROCESS_STAGING_ENTRY", "WORKFLOW_STEP"])), out
    assert out[1] == str(
        [
            "recon.close_period",
            "recon.import_csv",
            "recon.import_file",
            "recon.review_bulk",
            "recon.settlement_run",
            "tracker.bulk_tasks",
        ]
    ), out
