"""The bench's ceiling replays the very answer it is given, under the Procfile's gunicorn
line; the profile breakdown puts each sample in the innermost layer of its stack."""

import base64
import http.client
import os

from bench.client import Client
from bench.profile import layer_of
from bench.server import Ceiling, free_port

ANSWER = {
    "status": 200,
    "headers": [
        ["Content-Type", "application/json"],
        ["X-Imagebuilder-Status", "done"],
        ["X-Queue-Position", "0"],
    ],
    "body": base64.b64encode(b'{"status":200,"detail":"done"}').decode(),
}


def test_the_ceiling_answers_the_captured_bytes_to_any_request(tmp_path):
    env = {**os.environ, "ASU_HOST": "127.0.0.1", "ASU_PORT": str(free_port())}
    with Ceiling(env, tmp_path, ANSWER) as ceiling:
        client = Client(ceiling.url)
        replayed = client.capture("POST", "/api/v1/build", b'{"version": "25.12.0"}')
        assert replayed == ANSWER
        assert client.capture("GET", "/json/v1/overview.json") == ANSWER
        connection = http.client.HTTPConnection("127.0.0.1", int(ceiling.url.rsplit(":", 1)[1]))
        connection.request("HEAD", "/api/v1/build/abc")
        head = connection.getresponse()
        assert head.status == 200 and head.read() == b""
        assert head.getheader("Content-Length") == "30"
        connection.close()
        assert ceiling.cpu_snapshot()  # gunicorn's master and workers
    assert ceiling.web.poll() is not None  # stopped on leaving


def test_a_sample_goes_to_the_innermost_known_layer():
    view = "post (builds/views.py:120)"
    sql = "execute (django/db/backends/utils.py:78)"
    cors = "__call__ (corsheaders/middleware.py:46)"
    assert layer_of([cors, view, sql]) == "SQL: psycopg2 and Django's database layer"
    assert layer_of([cors, view, "helper (some/lib.py:1)"]).startswith("project code")
    assert layer_of([cors]) == "middleware: CORS"
    assert layer_of(["f (elsewhere.py:1)"]).startswith("other")
