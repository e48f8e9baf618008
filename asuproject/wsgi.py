import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asuproject.settings")
application = get_wsgi_application()

# What answers before Django (settings.ASU_WSGI_WRAPPERS, outermost first).
from django.conf import settings  # noqa: E402 (needs the settings module set above)
from django.utils.module_loading import import_string  # noqa: E402

for wrapper in reversed(settings.ASU_WSGI_WRAPPERS):
    application = import_string(wrapper)(application)

# A server process: the counts of its requests go to the database from a thread.
from tally.counting import flush_every  # noqa: E402 (needs the settings loaded above)

flush_every()
