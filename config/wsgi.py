import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)

from config.limits import LimitedWSGIHandler  # noqa: E402  (after django.setup)

# Django's WSGI handler with request-body limits enforced before and while reading (config.limits).
application = LimitedWSGIHandler()
