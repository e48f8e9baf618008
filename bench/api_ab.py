"""Server CPU of the build views before and after a change, in one process, call by call.

The views of another checkout (ASU_BENCH_BEFORE, a `git worktree` of the older commit)
are loaded beside this checkout's and called alternately with the same requests, so that
the load of a busy machine weighs on both alike. Both share this checkout's models, request
memory and answers; only the views differ. Middleware and URL routing are left out (see
bench/api_cpu.py for the whole stack):

    ASU_BENCH_BEFORE=/tmp/api-before DATABASE_URL=postgres://postgres@127.0.0.1:5432/asu_api \
        .venv/bin/pytest bench/api_ab.py -q -s -p no:randomly
"""

import importlib.util
import os
import statistics
import time
from pathlib import Path

import pytest
from django.test import RequestFactory

from bench.api_cpu import BODY
from builds import views as after
from builds.models import Build
from tests.builds.catalogue import finish, fresh_start, make_catalogue

pytestmark = pytest.mark.django_db
CALLS = 1000
BEFORE = Path(os.environ.get("ASU_BENCH_BEFORE", "/tmp/api-before"))


def load_before_views():
    spec = importlib.util.spec_from_file_location("before_views", BEFORE / "builds/views.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def interleaved(make_request, old, new) -> tuple[float, float]:
    """Median microseconds of `old` and `new`, each called CALLS times, alternately."""
    samples: dict = {old: [], new: []}
    for _ in range(50):
        old(make_request()), new(make_request())
    for _ in range(CALLS):
        for view in (old, new):
            request = make_request()
            start = time.process_time()
            view(request)
            samples[view].append(time.process_time() - start)
    return tuple(statistics.median(samples[v]) * 1e6 for v in (old, new))


def test_views_before_and_after(client, settings, tmp_path):
    if not (BEFORE / "builds/views.py").exists():
        pytest.skip(f"no older checkout at {BEFORE}")
    before = load_before_views()
    fresh_start(settings, tmp_path)
    make_catalogue()
    done = client.post("/api/v1/build", BODY, content_type="application/json").json()[
        "request_hash"
    ]
    finish(Build.objects.get(request_hash=done))
    queued = client.post(
        "/api/v1/build", BODY.replace("htop", "auc"), content_type="application/json"
    ).json()["request_hash"]
    factory = RequestFactory()
    views = {
        name: (getattr(before, name).as_view(), getattr(after, name).as_view())
        for name in ("BuildView", "BuildStatusView")
    }
    cases = {
        "post_cache_hit": (
            lambda: factory.post("/api/v1/build", BODY, content_type="application/json"),
            views["BuildView"],
            {},
        ),
        "get_done": (lambda: factory.get(f"/api/v1/build/{done}"), views["BuildStatusView"], done),
        "head_done": (
            lambda: factory.head(f"/api/v1/build/{done}"),
            views["BuildStatusView"],
            done,
        ),
        "get_queued": (
            lambda: factory.get(f"/api/v1/build/{queued}"),
            views["BuildStatusView"],
            queued,
        ),
    }
    for name, (make_request, (old, new), request_hash) in cases.items():
        kwargs = {"request_hash": request_hash} if request_hash else {}
        assert old(make_request(), **kwargs).content == new(make_request(), **kwargs).content
        before_us, after_us = interleaved(
            make_request,
            lambda request, view=old, kw=kwargs: view(request, **kw),
            lambda request, view=new, kw=kwargs: view(request, **kw),
        )
        print(
            f"\nAB {name}: before={before_us:.1f}us after={after_us:.1f}us "
            f"({(after_us / before_us - 1) * 100:+.1f}%)"
        )
