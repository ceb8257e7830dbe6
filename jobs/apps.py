from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Registers the jobs app's task types, job types and workflows, then those of env JOBS_MODULES."""
        from jobs import builtin, handlers, operations, registry
        from jobs.workflows import builtin as workflow_builtin
        from jobs.workflows import checks, declare
        from jobs.workflows import tasks as workflow_tasks
        from tracker import registry as tracker_registry

        tracker_registry.register(*handlers.TASK_HANDLERS, *workflow_tasks.TASK_HANDLERS)
        registry.register(builtin.countdown, builtin.approval_demo, builtin.sleep_demo, operations.bulk_tasks)
        declare.register(workflow_builtin.DIAMOND)
        registry.register_modules(registry.modules_from_env())
        checks.connect()
