import json

from django.core.management.base import BaseCommand
from rich.console import Console
from rich.table import Table

from tracker import services
from tracker.worker import cluster_status


class Command(BaseCommand):
    help = "Task counts per status and type, queue lag, throughput and consumer heartbeats."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        stats = services.task_stats()
        cluster = cluster_status()
        if options["json"]:
            self.stdout.write(json.dumps({"tasks": stats, "cluster": cluster}, default=str, indent=2))
            return
        console = Console(file=self.stdout)
        table = Table(title="Tasks by type and status")
        statuses = list(stats["by_status"])
        table.add_column("type")
        for s in statuses:
            table.add_column(s, justify="right")
        for task_type, counts in sorted(stats["by_type"].items()):
            table.add_row(task_type, *[str(counts.get(s, 0)) for s in statuses])
        table.add_row("[b]all[/b]", *[f"[b]{stats['by_status'][s]}[/b]" for s in statuses])
        console.print(table)
        console.print(
            f"oldest due task: {stats['oldest_due_age_seconds']} s; completed last minute: "
            f"{stats['throughput']['last_minute']}, last hour: {stats['throughput']['last_hour']}"
        )
        console.print(
            f"consumers alive: {cluster['consumers_alive']}/{cluster['consumers_wanted']}; "
            f"queue lag: {cluster['queue_lag_seconds']} s"
        )
