from django.apps import AppConfig


class ReconConfig(AppConfig):
    name = "recon"
    verbose_name = "Reconciliation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from recon.handlers import StagingEntryHandler
        from tracker import registry

        registry.register(StagingEntryHandler)
