# Hand-ordered from makemigrations' output: the change table is created whole, and the
# notification's new columns come before the index that uses one of them.

import django.db.models.functions.datetime
import notifications.validation
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0003_postgresql_insert_trigger'),
    ]

    operations = [
        migrations.AddField(
            model_name='notification',
            name='read_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='notification',
            name='url',
            field=models.CharField(blank=True, db_default='', default='', help_text='Optional: an http(s) URL, or a path on this site starting with /.', max_length=2048, validators=[notifications.validation.validate_url]),
        ),
        migrations.AddField(
            model_name='notification',
            name='level',
            field=models.CharField(choices=[('info', 'Info'), ('success', 'Success'), ('warning', 'Warning'), ('error', 'Error')], db_default='info', default='info', max_length=7, validators=[notifications.validation.validate_level]),
        ),
        migrations.AddIndex(
            model_name='notification',
            index=models.Index(condition=models.Q(('read_at__isnull', True)), fields=['user', 'id'], name='notification_unread'),
        ),
        migrations.CreateModel(
            name='Change',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('read', 'read'), ('deleted', 'deleted')], max_length=7)),
                ('ids', models.JSONField(default=dict)),
                ('newest', models.BigIntegerField(null=True)),
                ('created', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
            ],
            options={
                'indexes': [models.Index(fields=['created'], name='change_created')],
            },
        ),
    ]
