"""The tracker task type of workflow steps (thin): one WORKFLOW_STEP task runs one attempt of one step."""

from jobs.workflows import engine
from tracker.registry import TaskHandler, register


@register
class WorkflowStepTask(TaskHandler):
    """payload {"job_id", "step_id"}: one attempt of the step (jobs.workflows.engine.step_run). The step's own
    attempts and backoff govern retries; the task's attempts only count worker crashes."""

    task_type = engine.WORKFLOW_STEP
    queue = "default"
    max_attempts = 100
    long_running = True
    one_per_claim = True
    own_transaction = True
    backoff_base = 0.2
    backoff_cap = 5

    def run(self, task, ctx):
        engine.step_run(task=task, run_ctx=ctx)
