"""Server settings for the benchmark: the site's, plus a query counter and the bench's URLs.

daphne runs `site_config.asgi:application` with `DJANGO_SETTINGS_MODULE=bench.settings`
(`bench.asgi:application`, the same with the floor's raw stream in front, for `bin/bench floor`).
"""

from site_config.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "bench.apps.BenchConfig"]  # noqa: F405

# The site's URLs, the naive reference stream and the counters' endpoint.
ROOT_URLCONF = "bench.urls"
