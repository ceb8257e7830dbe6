"""The overlap index of statement lines (`recon_staging_line_key`) holds the key alone (no account id before it):
the overlap check (recon.ingest.STATEMENT_LINE_COUNTS) filters the account in the heap rows it finds by key. With
the account as the index's first column, the planner could take the account's own index instead for an account it
has no statistics for yet (a new account's first import: estimated one row, actually every line imported so far),
and each chunk then scanned all of the account's entries once per key."""

import django.db.models.fields.json
import django.db.models.functions.comparison
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("recon", "0008_staging_line_key_bytewise")]

    operations = [
        migrations.RemoveIndex(model_name="stagingentry", name="recon_staging_line_key"),
        migrations.AddIndex(
            model_name="stagingentry",
            index=models.Index(
                django.db.models.functions.comparison.Collate(
                    django.db.models.fields.json.KeyTextTransform("line_key", "metadata"), "C"
                ),
                condition=models.Q(("metadata__has_key", "line_key")),
                name="recon_staging_line_key",
            ),
        ),
    ]
