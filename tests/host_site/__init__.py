"""A host site for the browser tests: the app mounted under notifications/ and one page of the
site's own that only loads the bell (`{% load notifications %}{% notifications_bell %}`).

Run as daphne's settings with DJANGO_SETTINGS_MODULE=tests.host_site.settings.
"""
