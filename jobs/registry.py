"""Job types: `@job_type(name, params=Serializer)` on a re-entrant handler function.

    @job_type("recon.close_period", params=ClosePeriodParams, schema_version=1)
    def close_period(ctx: JobContext, params: dict) -> dict | None:
        ...

The handler is called once per slice and resumes from `ctx.checkpoint_data` (`{}` at first); its return value
becomes the job's `result` (see jobs.runtime). `@job_type` only declares: the apps register their types in
`AppConfig.ready` (`register(close_period, ...)`, `declare.register(workflow, ...)`), and `JobsConfig.ready`
registers the `JOB_TYPES` and `WORKFLOWS` of the comma-separated modules in env JOBS_MODULES (tests, benchmarks).
A name registered twice raises ImproperlyConfigured."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

from django.core.exceptions import ImproperlyConfigured

from jobs.errors import InvalidJobParams, UnknownJobType


@dataclass(frozen=True)
class JobType:
    name: str
    handler: Callable
    params: type | None = None  # a DRF Serializer class
    schema_version: int = 1
    description: str = ""
    # `upgrade(checkpoint, from_version) -> checkpoint` reads a checkpoint written by an older schema_version;
    # without it such a job is refused (fails with a clear error) instead of misreading its checkpoint.
    upgrade: Callable | None = None
    workflow: object = None  # the latest jobs.workflows.declare.Workflow of a workflow type
    # Demo types (jobs.builtin): startable by staff only, removed with JOBS_DEMO_TYPES=0 (shared/API.md, "Jobs").
    demo: bool = False
    # signal name -> admin URL name (taking the job id) of a page that confirms before sending it
    signal_views: dict | None = None

    def validate(self, params, context: dict | None = None) -> dict:
        """Validated params (JSON-ready) or InvalidJobParams (400) with the serializer's errors as details.
        `context` reaches the params serializer: `merchant_id` (the job's merchant) and `user` (who starts it),
        so a type can refuse objects the job may not touch with the answer it gives for unknown ones."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise InvalidJobParams("params must be a JSON object.", details={"params": ["Must be an object."]})
        if self.params is None:
            return params
        serializer = self.params(data=params, context=context or {})
        if not serializer.is_valid():
            details = {"params": serializer.errors}
            first = next(iter(serializer.errors.items()), ("params", ["invalid"]))
            msg = first[1][0] if isinstance(first[1], list) and first[1] else first[1]
            raise InvalidJobParams(f"params.{first[0]}: {msg}", details=details)
        # JSON-ready values (dates, decimals as strings, defaults filled in) so they can be stored.
        return dict(serializer.data)


_registry: dict[str, JobType] = {}


def demo_types_enabled() -> bool:
    from jobs import conf

    return bool(conf.get("DEMO_TYPES"))


def job_type(
    name: str,
    *,
    params: type | None = None,
    schema_version: int = 1,
    demo: bool = False,
    signal_views: dict | None = None,
    upgrade: Callable | None = None,
):
    """Declares `handler(ctx, params) -> dict | None` as job type `name` (`register(handler)` registers it). A `demo`
    type is startable by staff only and not registered at all with JOBS_DEMO_TYPES=0; `signal_views` maps a signal to
    the admin page that confirms before sending it. Bump `schema_version` when the checkpoint's shape changes, and
    pass `upgrade(checkpoint, from_version)` if older checkpoints can be read."""

    def decorate(handler: Callable) -> Callable:
        handler.declared_job_type = JobType(  # type: ignore[attr-defined]
            name=name,
            handler=handler,
            params=params,
            schema_version=schema_version,
            description=(handler.__doc__ or "").strip().split("\n")[0],
            demo=demo,
            signal_views=signal_views,
            upgrade=upgrade,
        )
        return handler

    return decorate


def register(*handlers: Callable) -> None:
    """Registers the job types declared on `handlers` by `@job_type` (demo types only with JOBS_DEMO_TYPES on).
    Assumes each name is new: one registered twice raises ImproperlyConfigured."""
    for handler in handlers:
        jt = handler.declared_job_type
        if jt.demo and not demo_types_enabled():
            continue
        if jt.name in _registry:
            raise ImproperlyConfigured(f"Job type {jt.name!r} is registered twice.")
        _registry[jt.name] = jt


def _workflow_handler(ctx, params):
    raise RuntimeError("A workflow run has no slices: its steps run as tracker tasks (jobs.workflows.engine).")


def register_workflow(wf) -> None:
    """Registers (or updates to a newer version) the job type of a workflow (jobs.workflows.declare.register).
    A job type of the same name that is not a workflow raises ImproperlyConfigured."""
    existing = _registry.get(wf.name)
    if existing is not None and existing.workflow is None:
        raise ImproperlyConfigured(f"Workflow {wf.name!r} has the name of a registered job type.")
    _registry[wf.name] = JobType(
        name=wf.name,
        handler=_workflow_handler,
        params=wf.params,
        schema_version=1,
        description=wf.description.split("\n")[0],
        workflow=wf,
        demo=wf.demo,
    )


def register_modules(names: list[str]) -> None:
    """Registers the `JOB_TYPES` and `WORKFLOWS` of each named module (env JOBS_MODULES)."""
    from jobs.workflows import declare

    for module in map(import_module, names):
        register(*getattr(module, "JOB_TYPES", ()))
        declare.register(*getattr(module, "WORKFLOWS", ()))


def modules_from_env() -> list[str]:
    return [m for m in os.environ.get("JOBS_MODULES", "").split(",") if m]


def get(name: str) -> JobType:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownJobType(
            f"Unknown job type {name!r}.", details={"job_type": [f"Unknown job type {name!r}."]}
        ) from None


def all_types() -> list[str]:
    return sorted(_registry)
