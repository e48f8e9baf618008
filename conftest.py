import os
import uuid

# Tests run with local defaults: a generated secret key under var/.
os.environ.setdefault("DEBUG", "true")
# One Celery queue per test session, so concurrent runs sharing a broker never take each
# other's tasks. Set here, before Django reads its settings; the test workers listen on it.
os.environ["ASU_CELERY_QUEUE"] = f"asu-test-{uuid.uuid4().hex[:8]}"
