"""Server settings for the benchmark: the site's, plus a query counter and the bench's URLs.

daphne runs `site_config.asgi:application` with `DJANGO_SETTINGS_MODULE=bench.settings`.
"""

from site_config.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "bench.apps.BenchConfig"]  # noqa: F405

# The site's URLs, the naive reference stream and the counters' endpoint.
ROOT_URLCONF = "bench.urls"
