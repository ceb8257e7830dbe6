"""Audit rows keep the name of the user who made the change, so it survives the user's deletion (by_user is
SET_NULL). Existing rows get their user's current name."""

from django.conf import settings
from django.db import migrations, models


def backfill(apps, schema_editor):
    Transition = apps.get_model('tracker', 'Transition')
    User = apps.get_model(settings.AUTH_USER_MODEL)
    names = models.Subquery(User.objects.filter(pk=models.OuterRef('by_user_id')).values('username')[:1])
    Transition.objects.filter(by_user__isnull=False).update(by_name=names)


class Migration(migrations.Migration):

    dependencies = [
        ('tracker', '0008_heartbeat_per_cluster'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='transition',
            name='by_name',
            field=models.CharField(blank=True, default='', max_length=150),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
