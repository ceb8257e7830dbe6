"""Consumer slots per cluster process: the heartbeat table is keyed by (cluster, slot). Its rows are transient
(the running clusters write them again within a second), so the table is recreated."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('tracker', '0007_attention_index_in_list_order'),
    ]

    operations = [
        migrations.DeleteModel(name='WorkerHeartbeat'),
        migrations.CreateModel(
            name='WorkerHeartbeat',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('cluster', models.CharField(help_text='Random id of the cluster process (tracker.cluster).', max_length=32)),
                ('slot', models.PositiveSmallIntegerField()),
                ('host', models.CharField(blank=True, default='', max_length=100)),
                ('cluster_pid', models.PositiveIntegerField(blank=True, help_text="The cluster's sentinel process.", null=True)),
                ('machine', models.CharField(blank=True, default='', help_text='Host, boot and PID namespace: where the pids can be checked.', max_length=255)),
                ('worker_id', models.CharField(blank=True, default='', help_text='The owner; empty when free.', max_length=128)),
                ('pid', models.PositiveIntegerField(blank=True, help_text="The owner's process.", null=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('beat_at', models.DateTimeField(blank=True, help_text="Last sign of life of the slot's cluster.", null=True)),
                ('enqueued_at', models.DateTimeField(blank=True, help_text='When a consumer was last asked to start.', null=True)),
                ('request_token', models.CharField(blank=True, default='', help_text='Token of the current start request; older requests exit at once.', max_length=32)),
                ('processed', models.BigIntegerField(default=0, help_text='Tasks finished by the current owner.')),
            ],
            options={
                'db_table': 'tracker_worker_heartbeat',
                'ordering': ['cluster', 'slot'],
                'constraints': [models.UniqueConstraint(fields=('cluster', 'slot'), name='tracker_heartbeat_cluster_slot')],
            },
        ),
    ]
