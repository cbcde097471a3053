"""Settings for the incident management site.

Every value comes from the environment (see .env.example); the defaults run the whole product
on a laptop: SQLite, a Celery broker on the filesystem, e-mail printed to the console.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # local state for the embedded defaults (broker folders, mail)

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional; real environment variables win

INSECURE_DEFAULT_SECRET_KEY = "django-insecure-local-development-only-never-use-in-production"

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=INSECURE_DEFAULT_SECRET_KEY)
if not DEBUG and SECRET_KEY == INSECURE_DEFAULT_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_DEBUG is off but DJANGO_SECRET_KEY is not set: refusing to start with the "
        "published development key. Set DJANGO_SECRET_KEY to a long random value."
    )

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[SITE_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",  # admin login throttling (issue 11)
    "incidents",
    "postmortems",
    "comms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "incidents.api.middleware.ApiInputGuardMiddleware",  # API bodies: size, depth, NUL checked before parsing
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # answers a locked-out login (last, as django-axes asks)
    "incidents_site.csp.ContentSecurityPolicyMiddleware",  # the public pages' CSP (issue 11)
]
# Public pages get a strict Content-Security-Policy (incidents_site/csp.py): own files only, no inline
# script, their own inline CSS allowed by hash. Views elsewhere can use @content_security_policy.
CONTENT_SECURITY_POLICY_PATHS = ["/status/", "/subscribe/"]

ROOT_URLCONF = "incidents_site.urls"

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

WSGI_APPLICATION = "incidents_site.wsgi.application"
ASGI_APPLICATION = "incidents_site.asgi.application"

# Database: SQLite by default, PostgreSQL (psycopg 3) in production and CI.
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads (runserver, tests) write at once: wait for the lock instead of failing. IMMEDIATE takes
    # the write lock when a transaction starts, so two that read then write wait for each other instead of
    # deadlocking ("database is locked" at once; an API POST runs in one transaction with its Idempotency-Key).
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
else:
    # A new connection per request halves throughput; keep them, and check them before use.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # JIT compilation costs more than it saves on the short queries of a web app (measured: 10-18 ms
    # on a 10 ms count); DATABASE_PG_OPTIONS overrides the server options sent at connect.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = env.str("DATABASE_PG_OPTIONS", default="-c jit=off")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Admin login throttling (django-axes, issue 11): after LOGIN_FAILURE_LIMIT wrong passwords for one
# username, or from one address, further attempts are refused (429, a page saying when to retry) for
# LOGIN_LOCKOUT_MINUTES; a success resets the count. Attempts are kept in the database (every web
# process sees them; the admin lists them under Axes), so this holds across processes without a cache.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one reaching the limit locks
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/login_throttled.html"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("DJANGO_STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# E-mail: django-environ's URL forms (smtp://, consolemail://, filemail:///path).
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="incidents@localhost")
# Seconds an SMTP connection waits before giving up (a hung server must not hold a delivery claim).
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Security: strict unless DEBUG; each can be relaxed from the environment (e.g. behind a proxy
# that terminates TLS, set DJANGO_SECURE_PROXY_SSL_HEADER=true).
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=not DEBUG)
if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
X_FRAME_OPTIONS = "DENY"

# Celery: a broker on the local filesystem by default (no server needed); Redis or RabbitMQ in
# production, e.g. CELERY_BROKER_URL=redis://127.0.0.1:6379/0 or amqp://guest:guest@host:5672//.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue, _control = VAR_DIR / "celery" / "queue", VAR_DIR / "celery" / "control"
    for _folder in (_queue, _control):
        _folder.mkdir(parents=True, exist_ok=True)  # kombu needs them before the worker starts
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue),
        "data_folder_out": str(_queue),
        "control_folder": str(_control),
        "store_processed": False,
    }
else:
    # Redis redelivers unacknowledged messages after this; every task's time limit stays below.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 600
CELERY_TASK_SOFT_TIME_LIMIT = 540
CELERY_TIMEZONE = TIME_ZONE
# The schedule lives in the database (django-celery-beat) so administrators see and change it in the
# admin; each app adds its periodic tasks in a data migration.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# --- Incident lists in the admin ---
# A list action (acknowledge, a status step, a severity, dismiss as duplicate…) over more incidents than
# this is refused with a message instead of running one service call per row of a 200,000-row table.
INCIDENT_LIST_ACTION_MAX = env.int("INCIDENT_LIST_ACTION_MAX", default=500)

# --- Post-incident reviews and action items (postmortems) ---
# Action-item reminders (postmortems.tasks, hourly by default: the schedule is in the admin under
# Periodic tasks). Owners hear of items due within this many days and of overdue items; items
# overdue by more than ESCALATE_AFTER_DAYS also go to the incident's commander. A reminder claimed
# but not sent (its worker died) is retried by a later sweep of the same day after RETRY_MINUTES.
ACTION_ITEM_REMINDER_DAYS_BEFORE = env.int("ACTION_ITEM_REMINDER_DAYS_BEFORE", default=3)
ACTION_ITEM_ESCALATE_AFTER_DAYS = env.int("ACTION_ITEM_ESCALATE_AFTER_DAYS", default=7)
ACTION_ITEM_REMINDER_RETRY_MINUTES = env.int("ACTION_ITEM_REMINDER_RETRY_MINUTES", default=15)
# Blameless check of reviews: names shorter than this are not looked for, and these words (comma-separated)
# are never taken for a person's name, on top of the built-in ordinary words ("will", "mark", "admin"…).
REVIEW_BLAMELESS_MIN_NAME_LENGTH = env.int("REVIEW_BLAMELESS_MIN_NAME_LENGTH", default=3)
REVIEW_BLAMELESS_IGNORE_WORDS = env.list("REVIEW_BLAMELESS_IGNORE_WORDS", default=[])

# --- Communications (comms) ---
# Public status page (/status/): its name, the time zone of its JSON timestamps, how long browsers
# and proxies may cache it, and the key of its opaque public ids (set it once in production:
# changing it, or SECRET_KEY while it is unset, changes every public id and breaks old links).
STATUS_PAGE_NAME = env.str("STATUS_PAGE_NAME", default="Service status")
STATUS_PAGE_TIME_ZONE = env.str("STATUS_PAGE_TIME_ZONE", default=TIME_ZONE)
STATUS_PAGE_MAX_AGE = env.int("STATUS_PAGE_MAX_AGE", default=30)
STATUS_PAGE_ID_KEY = env.str("STATUS_PAGE_ID_KEY", default="")
# After max-age, CDNs and browsers may keep serving a copy this long while they fetch a fresh one
# (stale-while-revalidate), or this long while the origin fails (stale-if-error). The origin keeps each
# rendered document in the cache (CACHE_URL) until the public state changes, at most CACHE_SECONDS.
STATUS_PAGE_STALE_WHILE_REVALIDATE = env.int("STATUS_PAGE_STALE_WHILE_REVALIDATE", default=30)
STATUS_PAGE_STALE_IF_ERROR = env.int("STATUS_PAGE_STALE_IF_ERROR", default=86400)
STATUS_PAGE_CACHE_SECONDS = env.int("STATUS_PAGE_CACHE_SECONDS", default=60)
# Scheduled maintenance: subscribers of its services hear of it this many hours before it starts.
MAINTENANCE_NOTICE_HOURS = env.int("MAINTENANCE_NOTICE_HOURS", default=24)
# Outbound webhooks: each POST waits this long for an answer; a failed one (5xx, 408, 429, timeout,
# connection error) is retried after BASE, 4×BASE, 16×BASE… seconds, at most MAX_ATTEMPTS tries in all.
WEBHOOK_TIMEOUT_SECONDS = env.int("WEBHOOK_TIMEOUT_SECONDS", default=10)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=6)
WEBHOOK_RETRY_BASE_SECONDS = env.int("WEBHOOK_RETRY_BASE_SECONDS", default=30)
# Subscriber deliveries (fan-out of published updates): deliveries per Celery task; a worker renews
# its claim on a chunk every CLAIM_HEARTBEAT seconds, and a claim not renewed for CLAIM_TIMEOUT seconds
# (its worker died) is taken over (keep it above HEARTBEAT plus the longest single send: the webhook
# timeout, EMAIL_TIMEOUT); the sweep re-enqueues pending ones the broker never got after SWEEP_AFTER
# seconds, and ones lost by the broker after REQUEUE_AFTER, or after CLAIM_TIMEOUT while no worker
# claims anything (a crashed worker's reserved messages).
COMMS_DELIVERY_CHUNK_SIZE = env.int("COMMS_DELIVERY_CHUNK_SIZE", default=50)
COMMS_DELIVERY_CLAIM_TIMEOUT = env.int("COMMS_DELIVERY_CLAIM_TIMEOUT", default=120)
COMMS_DELIVERY_CLAIM_HEARTBEAT = env.int("COMMS_DELIVERY_CLAIM_HEARTBEAT", default=30)
COMMS_DELIVERY_SWEEP_AFTER = env.int("COMMS_DELIVERY_SWEEP_AFTER", default=60)
COMMS_DELIVERY_REQUEUE_AFTER = env.int("COMMS_DELIVERY_REQUEUE_AFTER", default=3600)
COMMS_DELIVERY_MAX_ATTEMPTS = env.int("COMMS_DELIVERY_MAX_ATTEMPTS", default=6)
# Subscription confirmation links work this long; subscriber webhooks wait this long for an answer
# and may not aim at loopback/private addresses unless this is on.
COMMS_CONFIRM_MAX_AGE = env.int("COMMS_CONFIRM_MAX_AGE", default=7 * 24 * 3600)
# The public /subscribe/ form (issue 11): one address gets at most one confirmation per RESEND_MINUTES, and
# one client address may post it this many times an hour (then 429; counted in the cache: share it).
COMMS_CONFIRM_RESEND_MINUTES = env.int("COMMS_CONFIRM_RESEND_MINUTES", default=10)
COMMS_SUBSCRIBE_PER_ADDRESS_PER_HOUR = env.int("COMMS_SUBSCRIBE_PER_ADDRESS_PER_HOUR", default=20)
COMMS_WEBHOOK_TIMEOUT = env.int("COMMS_WEBHOOK_TIMEOUT", default=10)
COMMS_SUBSCRIBER_WEBHOOK_ALLOW_PRIVATE = env.bool("COMMS_SUBSCRIBER_WEBHOOK_ALLOW_PRIVATE", default=False)
# Internal updates go to the incident's current role holders and to these addresses (executives,
# support leads; comma-separated), except for restricted incidents, which stay with their own people.
COMMS_STAKEHOLDER_EMAILS = env.list("COMMS_STAKEHOLDER_EMAILS", default=[])
# Slack app (comms/slack, README "Slack"): off unless both the bot token and the signing secret are
# set. SLACK_ANNOUNCE_CHANNEL (a channel id or #name) hears declarations and changes per severity
# policy; SLACK_API_URL is the Web API's base (tests point it at a local server). Calls made while
# Slack waits for our answer (users.info, views.open) time out after REQUEST_TIMEOUT; the others run in
# Celery with TIMEOUT, retried after Retry-After (429) or BASE, 4×BASE… seconds, MAX_ATTEMPTS in all.
SLACK_BOT_TOKEN = env.str("SLACK_BOT_TOKEN", default="")
SLACK_SIGNING_SECRET = env.str("SLACK_SIGNING_SECRET", default="")
SLACK_ANNOUNCE_CHANNEL = env.str("SLACK_ANNOUNCE_CHANNEL", default="")
SLACK_API_URL = env.str("SLACK_API_URL", default="https://slack.com/api/")
SLACK_TIMEOUT_SECONDS = env.int("SLACK_TIMEOUT_SECONDS", default=10)
SLACK_REQUEST_TIMEOUT_SECONDS = env.float("SLACK_REQUEST_TIMEOUT_SECONDS", default=1.5)
SLACK_RETRY_BASE_SECONDS = env.int("SLACK_RETRY_BASE_SECONDS", default=15)
SLACK_MAX_ATTEMPTS = env.int("SLACK_MAX_ATTEMPTS", default=8)
SLACK_USER_CACHE_SECONDS = env.int("SLACK_USER_CACHE_SECONDS", default=3600)

# Cache: throttling counters live here. Local memory by default (per process); with several web
# processes use a shared one, e.g. CACHE_URL=redis://redis.internal:6379/1.
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}

# REST API (/api/v1/): API keys or a browser session, the admin's permissions, one error shape.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "incidents.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["incidents.api.permissions.ModelPermissions"],
    "DEFAULT_FILTER_BACKENDS": ["incidents.api.filters.StrictFilterBackend"],  # empty or mistyped values are 400s
    "DEFAULT_PAGINATION_CLASS": "incidents.api.pagination.KeysetPagination",
    "PAGE_SIZE": 25,
    # Applied by the API's views (incidents.api.views.ApiViewMixin), not to alert ingestion.
    "DEFAULT_THROTTLE_RATES": {"api": env.str("API_THROTTLE_RATE", default="600/min")},
    "EXCEPTION_HANDLER": "incidents.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "incidents.api.schema.AutoSchema",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
# REST API input limits (incidents.api.middleware): a bigger body is a 413 before anything reads it; JSON
# nested deeper is a 400. Alert ingestion has its own limit (INGEST_MAX_BODY_BYTES).
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1024 * 1024)
API_MAX_JSON_DEPTH = env.int("API_MAX_JSON_DEPTH", default=32)
# How long an Idempotency-Key's first response is replayed to retries (seconds).
API_IDEMPOTENCY_TTL = env.int("API_IDEMPOTENCY_TTL", default=24 * 3600)
# How long a web process trusts an API key it checked, with its user's permissions (a revoked key or a
# removed permission keeps working that long in other processes; 0 checks on every request).
API_KEY_CACHE_SECONDS = env.int("API_KEY_CACHE_SECONDS", default=10)
SPECTACULAR_SETTINGS = {
    "TITLE": "Incident management API",
    "DESCRIPTION": "Incidents, their lifecycle, timeline and roles; services and severities. "
    "Authenticate with `Authorization: Bearer <API key>`; the key acts with its user's permissions. "
    "The alert ingestion endpoints (tag `integrations`) take an integration's key instead. "
    'Every error has the shape `{"error": {"code", "message", "fields"}}` (PagerDuty events are answered '
    "as PagerDuty answers them).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    "COMPONENT_SPLIT_REQUEST": True,
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
    "SWAGGER_UI_DIST": "SIDECAR",  # served from our static files, no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a `status`, `kind` or `channel`: each choice set gets its own clear name.
    "ENUM_NAME_OVERRIDES": {
        "IncidentStatusEnum": "incidents.models.Incident.Status",
        "TimelineEventKindEnum": "incidents.models.TimelineEvent.Kind",
        "CustomerReportChannelEnum": "incidents.models.CustomerReport.Channel",
        "ReviewStatusEnum": "postmortems.models.Review.Status",
        "ActionItemStatusEnum": "postmortems.models.ActionItem.Status",
        "ActionItemKindEnum": "postmortems.models.ActionItem.Kind",
        "UpdateStatusEnum": "comms.models.Update.Status",
        "SubscriberChannelEnum": "comms.models.Subscriber.Channel",
    },
    # The alert ingestion endpoints are plain Django views, which drf-spectacular does not see: added here.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "incidents.api.integration_schema.add_integration_endpoints",
    ],
}

# Alert ingestion: the largest post accepted (PagerDuty's endpoint keeps PagerDuty's own 512 KB), and
# how long a web process trusts an integration key it has checked (a revoked key works that long).
INGEST_MAX_BODY_BYTES = env.int("INGEST_MAX_BODY_BYTES", default=10 * 1024 * 1024)
INGEST_KEY_CACHE_SECONDS = env.int("INGEST_KEY_CACHE_SECONDS", default=10)
# Abuse limits (issue 11): posts that fail authentication are kept as a 64 KB prefix, and past this many a
# minute from one address not at all (429; counted in the cache: share it, CACHE_URL); every stored post is
# deleted this many days after it arrived (hourly beat task "Prune stored alert posts").
INGEST_UNAUTHENTICATED_PER_MINUTE = env.int("INGEST_UNAUTHENTICATED_PER_MINUTE", default=30)
INGEST_PAYLOAD_RETENTION_DAYS = env.int("INGEST_PAYLOAD_RETENTION_DAYS", default=30)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
