"""`manage.py qcluster`: django-q2's command, with the tracker's sentinel (a cluster identity of its own, an
orderly stop on SIGTERM to the process or to its whole group; `tracker.cluster`). `tracker` comes before
`django_q` in INSTALLED_APPS, so this command is the one `manage.py` runs."""

from django_q import cluster as q_cluster
from django_q.management.commands.qcluster import Command as QClusterCommand

from tracker.cluster import Sentinel


class Command(QClusterCommand):
    def handle(self, *args, **options):
        q_cluster.Sentinel = Sentinel  # Cluster.start forks `Sentinel` by its module-level name
        return super().handle(*args, **options)
