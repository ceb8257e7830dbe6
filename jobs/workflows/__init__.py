"""Workflows: DAGs of named steps declared in code, run as jobs (docs/workflows.md)."""

from jobs.workflows.declare import Step, Workflow, WorkflowDeclarationError, workflow  # noqa: F401
