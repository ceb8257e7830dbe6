"""List the declared workflows with their step graphs as text."""

from django.core.management.base import BaseCommand

from jobs.workflows import declare


class Command(BaseCommand):
    help = "List the declared workflows (latest versions) with each step's parents."

    def handle(self, *args, **opts):
        for wf in declare.all_workflows():
            older = [v for v in declare.versions(wf.name) if v != wf.version]
            self.stdout.write(f"{wf.name}  v{wf.version}" + (f" (also declared: {older})" if older else "")
                              + (f"  {wf.description}" if wf.description else ""))
            self.stdout.write(wf.as_text())
            self.stdout.write("")
