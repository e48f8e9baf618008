"""`python -m bench --profile`: where each hot path's time goes, sampled with py-spy while
the load client repeats it (a dev tool: `pip install py-spy`; root or ptrace rights).

For each hot path: a flame graph (var/bench/profiles/<name>.svg) and a breakdown of the
samples in which a gunicorn thread held the GIL, i.e. ran Python, by layer. Each sample
goes to the innermost frame of its stack that belongs to a known layer: a frame in
psycopg2 is the SQL round trip even when a view called it. The database's own CPU and
gunicorn's socket work in the kernel are not Python samples; the CPU split between
gunicorn and the database backends is measured beside it from /proc.
"""

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

# (layer, pattern on "function (file:line)"), innermost match wins.
LAYERS = [
    ("SQL: psycopg2 and Django's database layer", r"psycopg2|django/db/|prepared\.py"),
    ("JSON encode", r"json/encoder|^dumps \("),
    ("JSON parse of the request", r"json/decoder|^loads \(|asuproject/input"),
    ("DRF (request, negotiation, renderer, serializer)", r"rest_framework/"),
    ("cache (django.core.cache, locmem)", r"django/core/cache"),
    ("answers before Django (builds/fastpath.py)", r"builds/fastpath"),
    ("project code (builds/, packages/, targets/)", r"\((builds|packages|targets)/"),
    ("middleware: CORS", r"corsheaders/"),
    ("middleware: WhiteNoise", r"whitenoise/"),
    ("middleware: security", r"django/middleware/security"),
    ("middleware: common", r"django/middleware/common"),
    ("middleware: CSRF", r"django/middleware/csrf"),
    ("middleware: clickjacking", r"django/middleware/clickjacking"),
    ("middleware: the project's (asuproject/middleware.py)", r"asuproject/middleware"),
    ("HttpResponse building", r"django/http/response"),
    ("HttpRequest, headers, body", r"django/http/request|django/core/handlers/wsgi"),
    ("URL resolving", r"django/urls/"),
    ("Django handler (signals, request start/end)", r"django/core/handlers|django/dispatch"),
    ("gunicorn: HTTP parsing", r"gunicorn/http/(message|parser|body|unreader)"),
    ("gunicorn: writing the response", r"gunicorn/http/wsgi"),
    ("gunicorn: worker loop, sockets", r"gunicorn/|selectors|socket"),
]
COMPILED = [(name, re.compile(pattern)) for name, pattern in LAYERS]
OTHER = "other (Python's and Django's helpers outside these layers)"


def py_spy() -> str | None:
    """py-spy from the bench's own virtualenv, else from the PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, output: Path, fmt: str) -> subprocess.Popen:
    """Start py-spy on gunicorn's master and its workers; it stops by itself."""
    args = [py_spy() or "py-spy", "record", "--pid", str(pid), "--subprocesses", "--gil",
            "--nonblocking", "--rate", "250", "--duration", str(max(1, round(seconds))),
            "--format", fmt, "--output", str(output)]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def layer_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, pattern in COMPILED:
            if pattern.search(frame):
                return name
    return OTHER


def breakdown(raw: Path) -> Counter[str]:
    """Samples per layer, from py-spy's collapsed stacks ("f1;f2;f3 count")."""
    layers: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            layers[layer_of(stack.split(";"))] += int(count)
    return layers


def breakdown_lines(title: str, layers: Counter[str], cpu_split: str) -> list[str]:
    total = sum(layers.values()) or 1
    lines = [
        f"#### {title}",
        "",
        cpu_split,
        "",
        "| layer | share of Python samples |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {count / total:.0%} |" for name, count in layers.most_common()]
    return [*lines, f"| ({total} samples) | |", ""]


def profile_hot_path(
    name: str, load: Callable[[], object], web_pid: int, cpu_split: str, out: Path
) -> list[str]:
    """Run `load` twice under py-spy: once for the flame graph, once for the breakdown.
    `cpu_split` says how the CPU divided between gunicorn and the database, without py-spy."""
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9_]+", "-", name.lower()).strip("-")
    raw = out / f"{slug}.txt"
    for fmt, path in (("flamegraph", out / f"{slug}.svg"), ("raw", raw)):
        spy = record(web_pid, LOAD_SECONDS, path, fmt)
        load()
        _, err = spy.communicate(timeout=60)
        if spy.returncode:
            raise RuntimeError(f"py-spy failed: {err.decode()[-2000:]}")
    return breakdown_lines(name, breakdown(raw), cpu_split)


LOAD_SECONDS = 5
