"""The overlap index of statement lines (`recon_staging_line_key`) compares its keys bytewise (collation "C"):
the overlap check (recon.ingest.STATEMENT_LINE_COUNTS) is then an index scan with one descent per key of the
chunk, instead of a scan of every entry of the account with the keys as a filter (what the planner chose for the
index in the database's collation)."""

import django.db.models.fields.json
import django.db.models.functions.comparison
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('recon', '0007_grouped_matching'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='stagingentry',
            name='recon_staging_line_key',
        ),
        migrations.AddIndex(
            model_name='stagingentry',
            index=models.Index(models.F('account'), django.db.models.functions.comparison.Collate(django.db.models.fields.json.KeyTextTransform('line_key', 'metadata'), 'C'), condition=models.Q(('metadata__has_key', 'line_key')), name='recon_staging_line_key'),
        ),
    ]
