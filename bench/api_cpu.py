"""Server CPU of the hottest API requests, in-process through Django's test client.

Run it in two checkouts, alternately, on the same database server, and compare:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/asu_api .venv/bin/pytest \
        bench/api_cpu.py -q -s -p no:randomly

Each figure is the median `time.process_time` of CALLS requests, in microseconds: a
repeated POST answered from the request memory (the same bytes, a finished build), a poll
(GET and HEAD) of a finished build and a poll of a queued one.
"""

import json
import os
import statistics
import time

import pytest

from builds.models import Build
from tests.builds.catalogue import finish, fresh_start, make_catalogue

pytestmark = pytest.mark.django_db
CALLS = int(os.environ.get("ASU_BENCH_CALLS", "400"))
BODY = json.dumps(
    {
        "version": "24.10.1",
        "target": "ath79/generic",
        "profile": "tplink,archer-c7-v5",
        "packages": ["luci", "tcpdump", "htop"],
        "diff_packages": False,
        "client": "luci/1.2.3",
    }
)


def cpu_microseconds(call) -> float:
    for _ in range(50):  # warm up: caches, prepared statements
        call()
    samples = []
    for _ in range(CALLS):
        start = time.process_time()
        call()
        samples.append(time.process_time() - start)
    return statistics.median(samples) * 1e6


def test_hot_paths(client, settings, tmp_path):
    fresh_start(settings, tmp_path)
    make_catalogue()
    done = client.post("/api/v1/build", BODY, content_type="application/json").json()
    finish(Build.objects.get(request_hash=done["request_hash"]))
    queued = client.post(
        "/api/v1/build", BODY.replace("htop", "auc"), content_type="application/json"
    ).json()
    figures = {
        "post_cache_hit": lambda: client.post(
            "/api/v1/build", BODY, content_type="application/json"
        ),
        "get_done": lambda: client.get(f"/api/v1/build/{done['request_hash']}"),
        "head_done": lambda: client.head(f"/api/v1/build/{done['request_hash']}"),
        "get_queued": lambda: client.get(f"/api/v1/build/{queued['request_hash']}"),
    }
    assert figures["post_cache_hit"]().status_code == 200
    assert figures["get_queued"]().status_code == 202
    print("\nBENCH " + " ".join(f"{k}={cpu_microseconds(v):.1f}" for k, v in figures.items()))
