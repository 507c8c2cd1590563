"""Settings of the relay, from the environment `meridian bench love` sets.

The channel layer is configured as LOVE's manager configures its frontend
pods (channels_redis RedisChannelLayer; capacity 100 and expiry 5 s are the
summit chart's defaults), so a consumer that falls behind loses messages the
way LOVE's do: silently, at the layer.
"""

import os

SECRET_KEY = os.environ.get("LOVEBENCH_SECRET_KEY", "bench-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
DATABASES = {}
USE_TZ = True
ASGI_APPLICATION = "lovebench.asgi.application"

# LOVE's PROCESS_CONNECTION_PASS: producers connect with ?password=.
PROCESS_CONNECTION_PASS = os.environ.get("LOVEBENCH_PASSWORD", "dev_pass")
# LOVE looks tokens up in its database; the bench gives them here instead.
BROWSER_TOKENS = frozenset(t for t in os.environ.get("LOVEBENCH_TOKENS", "").split(",") if t)
# LOVE's SHOW_TRACE_TIMESTAMPS (default true there): a `tracing` object in
# every data message, which is where producer_snd reaches the browser.
SHOW_TRACE_TIMESTAMPS = os.environ.get("LOVEBENCH_TRACE", "true").lower() == "true"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [os.environ.get("LOVEBENCH_REDIS_URL", "redis://127.0.0.1:6379/0")],
            "capacity": int(os.environ.get("LOVEBENCH_CAPACITY", "100")),
            "expiry": int(os.environ.get("LOVEBENCH_EXPIRY", "5")),
        },
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": os.environ.get("LOVEBENCH_LOG_LEVEL", "WARNING")},
}
