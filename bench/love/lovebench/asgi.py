"""ASGI entry point: `daphne lovebench.asgi:application` (run from bench/love)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lovebench.settings")

import django  # noqa: E402

django.setup()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from lovebench.consumers import SubscriptionConsumer  # noqa: E402

# LOVE's route: /manager/ws/subscription, /manager/<pool>/ws/subscription, with or without the slash.
application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(
            [re_path(r"^manager(.*?)/ws/subscription/?$", SubscriptionConsumer.as_asgi())]
        ),
    }
)
