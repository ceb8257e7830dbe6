"""Workflows the benchmarks run (loaded by the bench and its cluster through JOBS_MODULES)."""

from jobs.workflows import Step, Workflow, workflow

# Registered by jobs.registry.register_modules (conftest in the test process, JobsConfig.ready in the cluster).
WORKFLOWS: list[Workflow] = []


def _declare(*args, **kwargs) -> None:
    WORKFLOWS.append(workflow(*args, **kwargs))


def noop_step(ctx):
    return {"step": ctx.name}


# Ten steps: a root, eight in parallel, a join.
_declare(
    "bench.fan10",
    version=1,
    description="Benchmark: start, eight parallel no-op steps, join.",
    steps=[
        Step("start", noop_step),
        *[Step(f"s{i}", noop_step, depends_on=["start"]) for i in range(8)],
        Step("join", noop_step, depends_on=[f"s{i}" for i in range(8)]),
    ],
)
