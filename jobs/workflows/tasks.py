"""The tracker task type of workflow steps (thin): one WORKFLOW_STEP task runs one attempt of one step."""

from jobs import conf
from jobs.workflows import engine
from jobs.workflows.pool import StepPool
from tracker.registry import TaskHandler


class WorkflowStepTask(TaskHandler):
    """payload {"job_id", "step_id"}: one attempt of the step. The step's own attempts and backoff govern retries;
    the task's attempts only count worker crashes. A claim takes at most WORKFLOW_STEP_THREADS of them, and the
    consumer runs them all at once on its step threads (jobs.workflows.engine.steps_run_many)."""

    task_type = engine.WORKFLOW_STEP
    queue = "default"
    max_attempts = 100
    long_running = True
    claim_limited = True
    own_transaction = True
    backoff_base = 0.2
    backoff_cap = 5

    def get_claim_limit(self) -> int:
        return max(1, int(conf.get("WORKFLOW_STEP_THREADS")))

    def run(self, task, ctx):
        for _, exc in self.run_group([task], ctx):
            raise exc

    def run_group(self, tasks, ctx):
        pool = ctx.resource("workflow-steps", lambda: StepPool(self.get_claim_limit(), name=f"steps-{ctx.worker_id}"))
        return engine.steps_run_many(tasks=tasks, run_ctx=ctx, pool=pool)


TASK_HANDLERS = (WorkflowStepTask,)
