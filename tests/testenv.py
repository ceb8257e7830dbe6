"""Loaded first (`-p tests.testenv` in pyproject's addopts), before Django's settings are read: the development
values the settings no longer default to (`make test` sets them too). Child processes inherit them."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key-8f2c1e0b7a9d4c6e5f3a1b0c9d8e7f6a5b4c3d2e1f0a")
