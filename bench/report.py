"""How a benchmark run is reported: the table against its targets, the machine, the lateness plot.

- `Row` and `print_table`: one line per figure, with pass/FAIL against its target;
- `describe_environment`, `end_environment`, `print_environment`: what the run ran on (CPU,
  memory, OS, Python, SQLite, library versions, load average, git commit), printed before the
  table and kept in the JSON;
- `plot_lateness`: the lateness distribution of oyez and the baseline on one PNG. matplotlib is
  an optional extra (`pip install -e '.[bench]'`), imported only here, so the benchmark runs
  without it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import sqlite3
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LIBRARIES = ("apscheduler", "requests", "urllib3", "sqlalchemy", "sqlmodel", "pydantic")
BUSY_LOAD = 0.5  # a 1-minute load average per CPU at or above this means others were running


# --- the table ------------------------------------------------------------------

Value = float | bool | str | None


@dataclass
class Row:
    """One line of the table: a figure for oyez, maybe the baseline's, and its target."""

    scenario: str
    metric: str
    oyez: Value
    baseline: Value = None
    limit: float | None = None  # passes when oyez <= limit
    ratio_limit: float | None = None  # passes when oyez / baseline <= ratio_limit
    expect: bool | None = None  # for yes/no figures
    target_text: str = ""
    ratio_text: str = ""  # shown instead of oyez / baseline (growth rows)

    @property
    def ratio(self) -> float | None:
        if isinstance(self.oyez, bool) or isinstance(self.baseline, bool):
            return None
        if isinstance(self.oyez, float | int) and isinstance(self.baseline, float | int) and self.baseline:
            return self.oyez / self.baseline
        return None

    @property
    def target(self) -> str:
        if self.target_text:
            return self.target_text
        parts = []
        if self.limit is not None:
            parts.append(f"<= {fmt(self.limit)}")
        if self.ratio_limit is not None:
            parts.append(f"<= {self.ratio_limit:g}x base")
        if self.expect is not None:
            parts.append("yes" if self.expect else "no")
        return ", ".join(parts) or "-"

    @property
    def passed(self) -> bool | None:
        """True or False against the target; None for a figure shown for information."""
        checks: list[bool] = []
        if self.limit is not None:
            checks.append(isinstance(self.oyez, float | int) and self.oyez <= self.limit)
        if self.ratio_limit is not None:
            checks.append(self.ratio is not None and self.ratio <= self.ratio_limit)
        if self.expect is not None:
            checks.append(self.oyez is self.expect)
        return all(checks) if checks else None


def fmt(value: Value) -> str:
    """A figure as the table shows it: 3 significant digits, yes/NO, or '-' for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, str):
        return value
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def print_table(rows: Sequence[Row], title: str) -> None:
    """Print the rows as one aligned table."""
    header = ("scenario", "metric", "oyez", "baseline", "ratio", "target", "result")
    cells = [header] + [
        (r.scenario, r.metric, fmt(r.oyez), fmt(r.baseline),
         r.ratio_text or ("-" if r.ratio is None else f"{r.ratio:.2f}x"), r.target,
         {True: "pass", False: "FAIL", None: "info"}[r.passed])
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    print(title)
    for i, line in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`, which must not be empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# --- the machine --------------------------------------------------------------------

def describe_environment(root: Path) -> dict[str, Any]:
    """What this run runs on, for the report and the JSON; the load average is the one at start.

    Call `end_environment` at the end to add the load average then.
    """
    cpus = os.cpu_count() or 0
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cpus": cpus,
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus,
        "memory_gb": _memory_gb("MemTotal"),
        "memory_available_gb": _memory_gb("MemAvailable"),
        "os": _os_name(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "libraries": {name: _version(name) for name in LIBRARIES},
        "commit": _commit(root),
        "load_start": _load(),
        "load_end": None,
    }


def end_environment(env: dict[str, Any]) -> None:
    """Record the load average at the end of the run in `env`."""
    env["load_end"] = _load()


def print_environment(env: Mapping[str, Any]) -> None:
    """Print the environment as a few lines, saying whether the machine was busy."""
    memory = "?" if env["memory_gb"] is None else f"{env['memory_gb']:.1f}"
    free = env["memory_available_gb"]
    available = "" if free is None else f" ({free:.1f} free at start)"
    print(f"machine:  {env['host']}: {env['cpu']}, {env['cpus']} CPUs ({env['cpus_usable']} usable), "
          f"{memory} GB memory{available}")
    print(f"system:   {env['os']}, {env['kernel']}; {env['python']}, SQLite {env['sqlite']}")
    print("packages: " + ", ".join(f"{name} {version}" for name, version in env["libraries"].items()))
    print(f"tree:     {env['commit']}; run started {env['started']}")
    load = " / ".join(f"{when} {_loads(env[key])}" for when, key in (("start", "load_start"),
                                                                      ("end", "load_end")) if env[key])
    print(f"load:     1/5/15-minute average at {load} (the end includes this benchmark's own processes)")
    start = env["load_start"]
    if start and env["cpus_usable"] and start[0] >= BUSY_LOAD * env["cpus_usable"]:
        print(f"          BUSY: load {start[0]:.2f} on {env['cpus_usable']} CPUs before the run began: "
              "other work competed for the CPU, so the figures are slower and noisier than on an idle one")


def _loads(loads: Sequence[float]) -> str:
    return " ".join(f"{x:.2f}" for x in loads)


def _load() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _memory_gb(field: str) -> float | None:
    """A /proc/meminfo field (e.g. MemTotal) in GB; MemTotal falls back to sysconf elsewhere."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024 / 1e9
    if field == "MemTotal":
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    return None


def _os_name() -> str:
    with contextlib.suppress(OSError, AttributeError):
        return platform.freedesktop_os_release()["PRETTY_NAME"]
    return platform.platform()


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _commit(root: Path) -> str:
    """The tree's short commit hash, with ' dirty' if tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + (" dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


# --- the lateness plot --------------------------------------------------------------

COLOURS = {"oyez": "tab:blue", "baseline": "tab:orange"}


def plot_lateness(lateness: Mapping[str, Sequence[Sequence[float]]], title: str, path: Path) -> bool:
    """Draw each system's lateness (ms) as an ECDF on one PNG at `path`; False without matplotlib.

    `lateness` maps a system ("oyez", "baseline") to its runs, each a list of
    lateness figures. The thick line pools every run, with p50 and p99 marked;
    with several runs each run is also a thin line, to show the spread between
    runs. The x axis stops at 1.5x the larger p99 so the bulk stays legible;
    each legend entry gives the maximum.
    """
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    right, left = 0.0, 0.0
    for who, runs in lateness.items():
        pooled = sorted(value for run in runs for value in run)
        if not pooled:
            continue
        colour = COLOURS.get(who)
        if len(runs) > 1:
            for run in runs:
                _ecdf(ax, sorted(run), color=colour, linewidth=0.8, alpha=0.35)
        p50, p99 = percentile(pooled, 50), percentile(pooled, 99)
        _ecdf(ax, pooled, color=colour, linewidth=2,
              label=f"{who}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {pooled[-1]:.1f} ms "
                    f"({len(runs)} run{'s' * (len(runs) > 1)}, {len(pooled)} posts)")
        for q, value, style in ((0.5, p50, ":"), (0.99, p99, "--")):
            ax.axvline(value, color=colour, linestyle=style, linewidth=1)
            ax.plot([value], [q], "o", color=colour)
            ax.annotate(f"p{q * 100:g}", (value, q), textcoords="offset points", xytext=(4, -12),
                        color=colour, fontsize=8)
        right, left = max(right, p99), min(left, pooled[0])
    for q in (0.5, 0.99):
        ax.axhline(q, color="grey", linewidth=0.5)
    ax.set_xlim(left, right * 1.5 or 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("lateness at the fake server, ms (arrival minus the scheduled instant)")
    ax.set_ylabel("share of posts at most this late")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def _ecdf(ax: Any, ordered: Sequence[float], **style: Any) -> None:
    """One empirical CDF of the sorted values `ordered` as a step line."""
    n = len(ordered)
    ax.step(ordered, [(i + 1) / n for i in range(n)], where="post", **style)
