"""Settings, all read from the environment (see README, "Configuration")."""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(int(default))).strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# Secure by default (docs/operations.md, "Security settings"): DEBUG is off unless set, and there is no default
# secret: `make run` and the tests set development values (Makefile, tests/testenv.py).
DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    raise ImproperlyConfigured("Set DJANGO_SECRET_KEY (a long random string; `make run` sets a development one).")
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

# Every `check --deploy` setting comes from the environment. TLS usually ends at a reverse proxy, so redirects,
# HSTS and secure-only cookies are off by default; turn them on where the browser talks HTTPS to this host.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", False)
# "HTTP_X_FORWARDED_PROTO,https": trust the proxy's header for request.is_secure() (only behind such a proxy).
if os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = tuple(v.strip() for v in os.environ["DJANGO_SECURE_PROXY_SSL_HEADER"].split(",", 1))
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (Django's built-in middleware): scripts only from this host or with the request's nonce
# (the console's one inline script carries it); Swagger UI loads its init script as a file
# (SpectacularSwaggerSplitView).
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

INSTALLED_APPS = [
    "config.apps.ConsoleAdminConfig",  # django.contrib.admin with the merchant-scoped site (config/console.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_fsm",
    "tracker",  # before django_q: its `qcluster` command wraps django-q2's (tracker.cluster)
    "django_q",
    "recon",
    "jobs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "config.views.RefuseUnstorableTextMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
                "django.template.context_processors.csp",
            ]
        },
    }
]

# Database: PostgreSQL only, from DATABASE_URL (docs/decisions/0001-postgresql-only.md). `make run` and `make test`
# start a server of their own and set it.
if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        "DATABASE_URL must name a PostgreSQL database (postgres://user@host:port/name). `make run` starts one "
        "under var/pg and `make test` a throwaway one; while `make run` runs, var/pg/database_url holds its URL."
    )
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60, conn_health_checks=True)}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [] if DEBUG else [{"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"}]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# Dates with seconds and time zone in every console page (config/formats/en/formats.py).
FORMAT_MODULE_PATH = ["config.formats"]
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# WhiteNoise serves static files with DEBUG off too, straight from the apps (so `collectstatic` is optional:
# migrate + a web server + qcluster is enough, DESIGN.md "Running it").
WHITENOISE_USE_FINDERS = True

# Grouped matching: the most expectations one payout (one_to_many) may settle (AmbiguousMatchError above).
RECON_GROUP_MAX = env_int("RECON_GROUP_MAX", 10_000)
# Request-body limits (config.limits; docs/operations.md, "Limits"), enforced while the body is read, under WSGI
# and ASGI, before anything is stored. Uploads above UPLOAD_MAX_BYTES answer 413 (bytes); other bodies above
# REQUEST_MAX_BYTES too; a body above UNAUTHENTICATED_BODY_MAX_BYTES (or of unknown length) is read only after its
# credentials (token or session) are checked (401 otherwise).
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 200 * 1024 * 1024)
REQUEST_MAX_BYTES = env_int("REQUEST_MAX_BYTES", 10 * 1024 * 1024)
UNAUTHENTICATED_BODY_MAX_BYTES = env_int("UNAUTHENTICATED_BODY_MAX_BYTES", 64 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024)
# Per staging entry: the JSON text of its metadata (400 above it), and the length of a match-key value.
METADATA_MAX_BYTES = env_int("METADATA_MAX_BYTES", 64 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "config.api.Pagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "config.schema.ApiAutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["config.api.WriteThrottle"],
    "DEFAULT_THROTTLE_RATES": {"writes": os.environ.get("API_WRITE_THROTTLE", "1200/min")},
    "COERCE_DECIMAL_TO_STRING": True,
    "DEFAULT_PARSER_CLASSES": [
        "config.api.DecimalJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Recon ledger API",
    "DESCRIPTION": "Reconciliation against a double-entry ledger, a durable task ledger, and long-running jobs.",
    "VERSION": "0.1.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_INCLUDE_SCHEMA": False,
    # Every endpoint but the health check needs credentials (shared/API.md, "Auth"); the console's session works.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "EntryTypeEnum": "recon.models.Side",
        "ProcessingModeEnum": "recon.models.ProcessingMode",
        "StagingStatusEnum": "recon.models.StagingStatus",
        "TransactionStatusEnum": "recon.models.TransactionStatus",
        "EntryStatusEnum": "recon.models.EntryStatus",
        "TaskStatusEnum": "tracker.models.TaskStatus",
        "JobStateEnum": "jobs.models.JobState",
    },
}

# django-q2: the process runtime. The tracker is the source of truth; django-q2 hosts its consumer loops
# and the maintenance schedules. `retry` must exceed `timeout` (DESIGN.md, "Running it").
Q_WORKERS = env_int("Q_WORKERS", 2)
Q_CLUSTER = {
    "name": "recon",
    "orm": "default",
    # The ORM broker plus a private queue per cluster process, for its consumers' successors (tracker.cluster).
    "broker_class": "tracker.cluster.Broker",
    "workers": Q_WORKERS,
    "timeout": env_int("Q_TIMEOUT", 90),
    "retry": env_int("Q_RETRY", 150),
    "max_attempts": 3,
    "poll": 0.2,
    "catch_up": False,
    "save_limit": env_int("Q_SAVE_LIMIT", 500),
    "ack_failures": True,
    "label": "Cluster",
}

# Tracker (durable task ledger).
TRACKER = {
    "CONSUMERS": env_int("TRACKER_CONSUMERS", Q_WORKERS),
    "CONSUMER_SLICE_SECONDS": env_int("TRACKER_CONSUMER_SLICE_SECONDS", 15),
    "BATCH_SIZE": env_int("TRACKER_BATCH_SIZE", 200),  # first claim; then it adapts (tracker.worker)
    # The hot paths' statements (claim, workflow steps) prepared on their connection (tracker.bulk.execute); 0 for
    # a transaction pooler without prepared statements (PgBouncer before 1.21).
    "PREPARED_STATEMENTS": env_int("TRACKER_PREPARED_STATEMENTS", 1),
    "BATCH_MAX": env_int("TRACKER_BATCH_MAX", 1000),
    "BATCH_TARGET_SECONDS": float(os.environ.get("TRACKER_BATCH_TARGET_SECONDS", 1.0)),
    "LEASE_SECONDS": env_int("TRACKER_LEASE_SECONDS", 30),
    "MAX_ATTEMPTS": env_int("TRACKER_MAX_ATTEMPTS", 10),
    "BACKOFF_BASE_SECONDS": float(os.environ.get("TRACKER_BACKOFF_BASE_SECONDS", 1.0)),
    "BACKOFF_CAP_SECONDS": float(os.environ.get("TRACKER_BACKOFF_CAP_SECONDS", 300)),
    "POLL_SECONDS": float(os.environ.get("TRACKER_POLL_SECONDS", 0.5)),
    "RESCUE_EVERY_SECONDS": float(os.environ.get("TRACKER_RESCUE_EVERY_SECONDS", 5)),
    "RETENTION_DAYS": env_int("TRACKER_RETENTION_DAYS", 30),
    # Finished-task counters (tracker.counters): per-minute rows kept this long, then rolled up into hourly
    # rows kept COUNTER_RETENTION_DAYS.
    "COUNTER_MINUTES_HOURS": env_int("TRACKER_COUNTER_MINUTES_HOURS", 48),
    "COUNTERS": os.environ.get("TRACKER_COUNTERS", "1") != "0",  # 0: no finished-task counters (bench only)
    "COUNTER_RETENTION_DAYS": env_int("TRACKER_COUNTER_RETENTION_DAYS", 90),
    # Starts a bulk action's job (POST /api/tasks/bulk/, the admin); jobs provide it, the tracker does not import jobs.
    "BULK_STARTER": "jobs.operations.bulk_tasks_start",
    # The task search also finds the tasks of jobs whose params carry a pasted id (an upload's import job).
    "SEARCH_EXPANDERS": ["jobs.operations.jobs_referring_to"],
    # Extra modules that register task types (tests use this to add their own).
    "TASK_MODULES": [m for m in os.environ.get("TRACKER_TASK_MODULES", "").split(",") if m],
}

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "line"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
        "django.db.backends": {"level": os.environ.get("DB_LOG_LEVEL", "INFO")},
        "django-q": {"level": os.environ.get("Q_LOG_LEVEL", "WARNING")},
    },
}

LOGIN_URL = "/admin/login/"
CSRF_FAILURE_VIEW = "config.views.csrf_failure"
# Merchant users (not staff) get their console permissions from their memberships' roles (config/console.py).
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend", "config.console.MerchantRoleBackend"]

# Access policy (merchant scoping) used by tracker and jobs without importing recon.
TENANT_ACCESS = "recon.access"

# GET /metrics (config.metrics): staff users, or `Authorization: Bearer <METRICS_TOKEN>` when set.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
