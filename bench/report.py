"""The results table: each figure the median of its runs, with the machine it ran on."""

import os
import platform
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class Figure:
    section: str  # "1. cache-hit POST /api/v1/build"
    name: str  # "requests/s"
    unit: str  # "req/s", "ms", "s", "ratio"
    runs: list[float] = field(default_factory=list)
    aim: str = ""  # ">= 1500", "< 20"; empty when there is none
    note: str = ""  # the client used, the number of queries, ...

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    @property
    def met(self) -> str:
        if not self.aim or not self.runs:
            return ""
        op, _, bound = self.aim.partition(" ")
        value, limit = self.median, float(bound)
        ok = {">=": value >= limit, "<": value < limit, "<=": value <= limit}[op]
        return "yes" if ok else "**no**"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(db_kind: str, broker_kind: str, client: str, runs: int) -> list[str]:
    import django

    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB memory"
    except (ValueError, OSError):
        pass
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} cores ({cpu_model()}){memory}, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, Django {django.get_version()}",
        f"- database: {db_kind}; broker: {broker_kind}",
        f"- load client: {client}; 8 concurrent keep-alive connections; loopback only",
        f"- each figure is the median of {runs} run(s)",
    ]


def _fmt(value: float, unit: str) -> str:
    if value != value:  # NaN: the benchmark did not run
        return "-"
    if unit == "req/s":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if unit == "s":
        return f"{value:.2f}"
    return f"{value:.2f}"


def table(figures: list[Figure]) -> list[str]:
    """A Markdown table, readable as plain text too."""
    lines = [
        "| benchmark | figure | median | runs | aim | met | notes |",
        "|---|---|---:|---|---|---|---|",
    ]
    last_section = None
    for fig in figures:
        section = fig.section if fig.section != last_section else ""
        last_section = fig.section
        runs = " ".join(_fmt(x, fig.unit) for x in fig.runs) or "not run"
        aim = f"{fig.aim} {fig.unit}" if fig.aim else ""
        lines.append(
            f"| {section} | {fig.name} ({fig.unit}) | {_fmt(fig.median, fig.unit)} | {runs} "
            f"| {aim} | {fig.met} | {fig.note} |"
        )
    return lines
