"""Declaring workflows in code: a name, a version, a description, steps with their dependencies.

    from jobs.workflows import Step, workflow

    workflow("recon.settlement_run", version=1, description="...", params=SettlementParams, steps=[
        Step("import_provider", import_provider),
        Step("import_bank", import_bank),
        Step("report", build_report, depends_on=["import_provider", "import_bank"], max_attempts=5,
             backoff=2.0, timeout=600),
        Step("close", close, depends_on=["report"], condition=lambda parents: parents["report"]["ok"]),
    ])

The graph is checked at declaration time with `graphlib`: a duplicate step name, an unknown parent or a cycle raises
`WorkflowDeclarationError` naming the workflow and the steps. The apps register their workflows in `AppConfig.ready`
(`register(wf)`), so a bad declaration stops every start-up. Several versions of one name may be declared (keep old ones
while runs of them are unfinished): new runs use the highest version, a run keeps the version it started with."""

import graphlib
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured


class WorkflowDeclarationError(ImproperlyConfigured):
    """A workflow declaration is not a valid graph."""


def exponential_backoff(attempt: int) -> float:
    """Default backoff: 1 s, 2 s, 4 s ... capped at 60 s."""
    return min(60.0, 2.0 ** max(0, attempt - 1))


@dataclass(frozen=True)
class Step:
    """One step: `function(ctx) -> JSON result`. `backoff` is seconds (fixed) or `f(attempt) -> seconds`;
    `timeout` (seconds) turns a longer attempt into a retryable failure; `condition(parents_results) -> bool`
    decides, once the parents are done, whether the step runs (False: SKIPPED)."""

    name: str
    function: Callable
    depends_on: tuple[str, ...] | list[str] = ()
    max_attempts: int | Callable[[dict], int] = 3  # or f(run params) -> int
    backoff: float | Callable[[int], float] = exponential_backoff
    timeout: float | None = None
    condition: Callable[[dict], bool] | None = None

    def attempts_for(self, params: dict) -> int:
        return int(self.max_attempts(params) if callable(self.max_attempts) else self.max_attempts)

    def backoff_seconds(self, attempt: int) -> float:
        return float(self.backoff(attempt) if callable(self.backoff) else self.backoff)


@dataclass(frozen=True)
class Workflow:
    name: str
    version: int
    steps: tuple[Step, ...]
    description: str = ""
    params: type | None = None  # a DRF Serializer class for the run's params
    # A Django Form class for starting a run from the admin: `Form(data, files, user=...)` with a
    # `start(by) -> Job` method (it checks the user may operate the run's merchant).
    start_form: type | None = None
    demo: bool = False  # a demo type (jobs.registry): staff only, not declared with JOBS_DEMO_TYPES=0
    order: tuple[str, ...] = field(default=())  # topological order of the step names

    def step(self, name: str) -> Step:
        return self._by_name[name]

    @property
    def _by_name(self) -> dict[str, Step]:
        return {s.name: s for s in self.steps}

    def children(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {s.name: [] for s in self.steps}
        for s in self.steps:
            for parent in s.depends_on:
                out[parent].append(s.name)
        return out

    def descendants(self, name: str) -> list[str]:
        """`name` and every step downstream of it."""
        children, seen, todo = self.children(), [], [name]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.append(current)
                todo.extend(children[current])
        return seen

    def leaves(self) -> list[str]:
        children = self.children()
        return [n for n in self.order if not children[n]]

    def as_text(self) -> str:
        """The graph as text: one line per step in topological order with its parents."""
        width = max((len(n) for n in self.order), default=0)
        lines = []
        for name in self.order:
            step = self.step(name)
            parents = ", ".join(step.depends_on) or "-"
            lines.append(f"  {name.ljust(width)}  <- {parents}  (max_attempts {step.attempts_for({})})")
        return "\n".join(lines)


_versions: dict[str, dict[int, Workflow]] = {}


def topological_order(name: str, steps: list[Step]) -> tuple[str, ...]:
    """The step names in an order where parents come first (declaration order among peers), or
    WorkflowDeclarationError for a duplicate name, an unknown parent or a cycle."""
    names = [s.name for s in steps]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise WorkflowDeclarationError(f"Workflow {name!r}: duplicate step name(s) {', '.join(duplicates)}.")
    if not steps:
        raise WorkflowDeclarationError(f"Workflow {name!r} has no steps.")
    for s in steps:
        unknown = [p for p in s.depends_on if p not in names]
        if unknown:
            raise WorkflowDeclarationError(
                f"Workflow {name!r}: step {s.name!r} depends on unknown step(s) {', '.join(map(repr, unknown))}."
            )
        if len(set(s.depends_on)) != len(s.depends_on):
            raise WorkflowDeclarationError(f"Workflow {name!r}: step {s.name!r} lists a parent twice.")
        if not callable(s.max_attempts) and s.max_attempts < 1:
            raise WorkflowDeclarationError(f"Workflow {name!r}: step {s.name!r} needs max_attempts >= 1.")
    sorter = graphlib.TopologicalSorter({s.name: list(s.depends_on) for s in steps})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise WorkflowDeclarationError(f"Workflow {name!r}: the steps form a cycle ({cycle}).") from None
    position = {n: i for i, n in enumerate(names)}
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    return tuple(order)


def workflow(
    name: str,
    *,
    version: int = 1,
    steps: list[Step],
    description: str = "",
    params: type | None = None,
    start_form: type | None = None,
    demo: bool = False,
) -> Workflow:
    """Declares version `version` of workflow `name` (`register(wf)` registers it: the highest version is the job
    type `name` that `POST /api/jobs/` starts). Raises WorkflowDeclarationError for an invalid graph."""
    steps = [
        Step(s.name, s.function, tuple(s.depends_on), s.max_attempts, s.backoff, s.timeout, s.condition) for s in steps
    ]
    order = topological_order(name, steps)
    return Workflow(
        name=name,
        version=int(version),
        steps=tuple(steps),
        description=description.strip(),
        params=params,
        start_form=start_form,
        demo=demo,
        order=order,
    )


def register(*workflows: Workflow) -> None:
    """Registers workflow versions (from the apps' `ready()`); a demo workflow only with JOBS_DEMO_TYPES on.
    Raises WorkflowDeclarationError for a version registered twice."""
    from jobs.registry import demo_types_enabled, register_workflow

    for wf in workflows:
        if wf.demo and not demo_types_enabled():
            continue
        if wf.version in _versions.get(wf.name, {}):
            raise WorkflowDeclarationError(f"Workflow {wf.name!r} version {wf.version} is declared twice.")
        _versions.setdefault(wf.name, {})[wf.version] = wf
        register_workflow(latest(wf.name))


def latest(name: str) -> Workflow:
    versions = _versions[name]
    return versions[max(versions)]


def get_version(name: str, version: int | None) -> Workflow | None:
    """The declared version (None when it is not registered any more)."""
    versions = _versions.get(name) or {}
    if version is None:
        return versions[max(versions)] if versions else None
    return versions.get(int(version))


def versions(name: str) -> list[int]:
    return sorted(_versions.get(name) or {})


def all_workflows() -> list[Workflow]:
    return [latest(n) for n in sorted(_versions)]
