import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)

from config.limits import LimitedASGIHandler  # noqa: E402  (after django.setup)

# Django's ASGI handler with request-body limits enforced while reading (config.limits).
application = LimitedASGIHandler()
