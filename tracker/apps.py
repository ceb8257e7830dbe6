from django.apps import AppConfig


class TrackerConfig(AppConfig):
    name = "tracker"
    verbose_name = "Task ledger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django_q.signals import post_spawn

        from tracker import audit, counters, lookups  # noqa: F401  (the FSM audit receiver, the `__any` lookup)
        from tracker.tasks import on_worker_spawn

        post_spawn.connect(on_worker_spawn, dispatch_uid="tracker-consumers")
        counters.connect()  # operator cancels through the FSM are counted as finished
