import os
import warnings

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# WhiteNoise's static files are the only synchronous streaming responses (small files, read whole by Django); the
# long-lived streams (jobs' events) are asynchronous iterators under ASGI.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")
application = get_asgi_application()
