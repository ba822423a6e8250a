from __future__ import annotations

from django.apps import AppConfig
from django.db.backends.signals import connection_created


class BenchConfig(AppConfig):
    name = "bench"
    verbose_name = "Benchmark instrumentation"

    def ready(self) -> None:
        from . import counters

        connection_created.connect(counters.count_statements, dispatch_uid="bench.count")
        counters.log_claims()
