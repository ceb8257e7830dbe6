from django.apps import AppConfig


class ReconConfig(AppConfig):
    name = "recon"
    verbose_name = "Reconciliation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        """Registers recon's task type, job types and workflow."""
        from jobs import registry as job_registry
        from jobs.workflows import declare
        from recon import jobs, workflows
        from recon.handlers import StagingEntryHandler
        from tracker import registry

        registry.register(StagingEntryHandler)
        job_registry.register(jobs.import_file, jobs.import_csv, jobs.close_period, jobs.review_bulk)
        declare.register(workflows.SETTLEMENT_RUN_V1)
