"""A bounded fuzz run from the OpenAPI description (schemathesis): every operation, valid
and invalid requests alike, through the WSGI application in this process. No answer may
be a 5xx, and each must be what the description says: a documented status code, content
type and headers, and a body its schema accepts.

Deterministic (derandomized) and small, so that it runs in seconds and a failure runs again
the same way. tests/test_fuzz.py keeps what the description cannot say: bodies that are not
JSON at all, hostile path segments and Range headers.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from asuproject.wsgi import application
from tests.builds.catalogue import fresh_start, make_catalogue

schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def catalogue(settings, tmp_path) -> None:
    """A small catalogue and an empty upstream; and the test's database connection kept
    across requests, as Django's test client keeps it: a WSGI request closes, when it
    starts and when it finishes, a connection it thinks is stale, and the test's own,
    inside its transaction, looks so; what was written after that would be committed
    and seen by later tests."""
    fresh_start(settings, tmp_path)
    make_catalogue()
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_described(case, catalogue):
    case.call_and_validate(checks=CHECKS)
