import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asuproject.settings")
application = get_wsgi_application()

# A server process: the counts of its requests go to the database from a thread.
from tally.counting import flush_every  # noqa: E402 (needs the settings loaded above)

flush_every()
