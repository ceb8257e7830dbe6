import os
import warnings

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)

from config.limits import LimitedASGIHandler  # noqa: E402  (after django.setup)

# WhiteNoise's static files are the only synchronous streaming responses (small files, read whole by Django); the
# long-lived streams (jobs' events) are asynchronous iterators under ASGI.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")
# Django's ASGI handler with request-body limits enforced while reading (config.limits).
application = LimitedASGIHandler()
