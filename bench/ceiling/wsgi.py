"""gunicorn's entry to the ceiling app: `gunicorn bench.ceiling.wsgi`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.ceiling.app"
application = get_wsgi_application()
