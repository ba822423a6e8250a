"""Settings for the notification service, read once from the environment (and a .env file)."""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Values already in the environment win over the file's.
environ.Env.read_env(env.str("ENV_FILE", default=str(BASE_DIR / ".env")))

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment or in .env "
            "(see .env.example), or set DEBUG=true for local development."
        )
    SECRET_KEY = "django-insecure-local-development-only"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS behind a proxy (README, "Deployment"). Off by default: local development and the
# single-process setup on 127.0.0.1 speak plain HTTP. `manage.py check --deploy` passes with the
# production values documented in .env.example.
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    # Trust the proxy's X-Forwarded-Proto; only safe when daphne is reachable through it alone.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Load balancers and Prometheus call these over plain HTTP, straight to daphne.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic",
    "django.contrib.staticfiles",
    "notifications",
    # This site's own pieces: the ensure_admin command, the user admin with "Send notification…".
    "site_config",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "site_config.urls"
ASGI_APPLICATION = "site_config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # One daphne process, admin saves and scripts write at once: IMMEDIATE transactions take
    # the write lock up front (a busy timeout cannot rescue a DEFERRED read-then-write), WAL
    # lets readers run beside the writer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A server that stops answering (a failover, a dropped network path) must fail a query
    # within seconds, not hang it until the kernel gives up on the connection. URL query
    # parameters (?connect_timeout=...) win.
    options = DATABASES["default"].setdefault("OPTIONS", {})
    for name, value in {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }.items():
        options.setdefault(name, value)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Served by ServeStatic straight from the apps' static folders, DEBUG or not: one daphne
# process is a whole deployment, with no collectstatic step to forget.
SERVESTATIC_USE_FINDERS = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        # Not propagated: daphne configures the root logger too, and every line came twice.
        "notifications": {
            "handlers": ["console"],
            "level": env.str("LOG_LEVEL", default="INFO"),
            "propagate": False,
        },
    },
}

# The notification stream; see CONTRACT.md and .env.example.
NOTIFICATIONS_POLL_INTERVAL = env.float("NOTIFICATIONS_POLL_INTERVAL", default=1.0)
NOTIFICATIONS_RECENT_WINDOW = env.float("NOTIFICATIONS_RECENT_WINDOW", default=60.0)
NOTIFICATIONS_KEEPALIVE = env.float("NOTIFICATIONS_KEEPALIVE", default=15.0)
NOTIFICATIONS_REPLAY_LIMIT = env.int("NOTIFICATIONS_REPLAY_LIMIT", default=100)
NOTIFICATIONS_RETRY = env.int("NOTIFICATIONS_RETRY", default=2000)
NOTIFICATIONS_SESSION_CHECK_INTERVAL = env.float(
    "NOTIFICATIONS_SESSION_CHECK_INTERVAL", default=2.0
)
NOTIFICATIONS_MAX_STREAMS_PER_USER = env.int("NOTIFICATIONS_MAX_STREAMS_PER_USER", default=10)
NOTIFICATIONS_MAX_STREAMS = env.int("NOTIFICATIONS_MAX_STREAMS", default=0)
NOTIFICATIONS_MAX_LENGTH = env.int("NOTIFICATIONS_MAX_LENGTH", default=10_000)
NOTIFICATIONS_STREAM_MAX_BYTES = env.int("NOTIFICATIONS_STREAM_MAX_BYTES", default=1_048_576)
# Off in the app (a process-wide choice); on for this site, which holds thousands of streams.
NOTIFICATIONS_GC_FREEZE = env.bool("NOTIFICATIONS_GC_FREEZE", default=True)
NOTIFICATIONS_CHANGE_CHECK_INTERVAL = env.float("NOTIFICATIONS_CHANGE_CHECK_INTERVAL", default=0.05)
# PostgreSQL behind a pooler in transaction mode (PgBouncer): a direct connection for LISTEN.
NOTIFICATIONS_LISTEN_DATABASE_URL = env.str("NOTIFICATIONS_LISTEN_DATABASE_URL", default="")
