"""Workflows the benchmarks run (loaded by the bench and its cluster through JOBS_MODULES)."""

from jobs.workflows import Step, workflow


def noop_step(ctx):
    return {"step": ctx.name}


# Ten steps: a root, eight in parallel, a join.
workflow("bench.fan10", version=1, description="Benchmark: start, eight parallel no-op steps, join.", steps=[
    Step("start", noop_step),
    *[Step(f"s{i}", noop_step, depends_on=["start"]) for i in range(8)],
    Step("join", noop_step, depends_on=[f"s{i}" for i in range(8)]),
])
