"""Django: the relay at /ai, dispatched at the ASGI level in front of Django.

A one-file Django project (settings, a URLconf and ``asgi.py`` in one module) so
it runs as is. Run it against the offline simulator:

    streamrelay simulate --port 9000 &
    STREAMRELAY_UPSTREAM=http://127.0.0.1:9000/v1 uvicorn examples.django_asgi:application --port 8000

    curl -N http://127.0.0.1:8000/ai/chat/completions?format=sse \
      -H 'content-type: application/json' \
      -d '{"model": "sim-1", "messages": [{"role": "user", "content": "Hi"}]}'
    curl http://127.0.0.1:8000/health

Against OpenAI, set OPENAI_API_KEY instead of STREAMRELAY_UPSTREAM. Any ASGI server
works the same way (``hypercorn``, ``granian --interface asgi``, ``daphne``).

In your own project, only the last lines belong in ``<project>/asgi.py``::

    application = mount_asgi(get_asgi_application(), {"/ai": StreamRelay()})

The relay never passes through Django's middleware, so Django's ``GZipMiddleware``
(enabled below for Django's own pages) cannot hold its tokens back. Mounting it
as a Django view instead would not work: Django's sync streaming responses go
through ``GZipMiddleware``'s compressor, which buffers.
"""

import os

from django.conf import settings

settings.configure(
    DEBUG=os.environ.get("DJANGO_DEBUG") == "1",
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret"),
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "django.middleware.gzip.GZipMiddleware",
        "django.middleware.common.CommonMiddleware",
    ],
)

from django.core.asgi import get_asgi_application  # noqa: E402  (after settings)
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from streamrelay import StreamRelay  # noqa: E402
from streamrelay.dispatch import mount_asgi  # noqa: E402


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True, "script_name": request.META["SCRIPT_NAME"]})


def about(request: HttpRequest) -> HttpResponse:
    # Long enough for GZipMiddleware to compress it.
    return HttpResponse("A Django host app. The relay lives at /ai/chat/completions. " * 20)


urlpatterns = [path("health", health), path("about", about)]

# This is what goes in asgi.py: Django for everything, the relay under /ai.
application = mount_asgi(get_asgi_application(), {"/ai": StreamRelay()})
