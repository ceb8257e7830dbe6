from django.apps import AppConfig


class TrackerConfig(AppConfig):
    name = "tracker"
    verbose_name = "Task ledger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.conf import settings
        from django_q.signals import post_spawn

        from tracker import audit, counters, lookups, registry
        from tracker.tasks import on_worker_spawn

        audit.connect()  # the FSM's audit rows
        lookups.connect()  # the `__any` lookup
        registry.register_modules(settings.TRACKER["TASK_MODULES"])
        post_spawn.connect(on_worker_spawn, dispatch_uid="tracker-consumers")
        counters.connect()  # operator cancels through the FSM are counted as finished
