"""django-q2 entry points (thin)."""

from jobs import services


def sweep() -> dict:
    """Every minute (schedule `jobs-sweep`, created by a migration): repair runs lost between two commits,
    fail jobs whose run task ran out of attempts, fire overdue timers."""
    return services.job_sweep()
