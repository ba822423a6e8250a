"""The run's output: the machine it ran on, a table, JSON and a chart."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.daphne_runner import PROJECT


def machine(database_version: str) -> dict[str, Any]:
    """Describe the machine, the software and the code measured."""
    import daphne
    import django
    import twisted

    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=PROJECT, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "open_file_limit": _nofile(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "daphne": daphne.__version__,
        "twisted": twisted.__version__,
        "database": database_version,
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain")),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
    }


def _nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _get(row: dict[str, Any], *keys: str) -> Any:
    value: Any = row
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("open", ("opened",)),
    ("p50 ms", ("other_process", "p50_ms")),
    ("p95", ("other_process", "p95_ms")),
    ("p99", ("other_process", "p99_ms")),
    ("max", ("other_process", "max_ms")),
    ("arrived", ("other_process", "arrived")),
    ("admin p50", ("admin_form", "p50_ms")),
    ("admin p99", ("admin_form", "p99_ms")),
    ("admin arr.", ("admin_form", "arrived")),
    ("CPU %", ("cpu_percent",)),
    ("KB/stream", ("rss_per_stream_kib",)),
    ("threads", ("threads",)),
    ("DB conns", ("db_connections",)),
    ("queries/s", ("queries_per_s",)),
    ("checks/s", ("change_checks_per_s",)),
]

# Columns where the ratio naive/ours says something (the rest are counts).
RATIO_COLUMNS = {"p50 ms", "p99", "CPU %", "KB/stream", "threads", "DB conns", "queries/s"}


def _cell(row: dict[str, Any], name: str, keys: tuple[str, ...]) -> str:
    value = _get(row, *keys)
    if name == "arrived" and value is not None:
        return f"{value}/{_get(row, 'other_process', 'sent')}"
    if name == "admin arr." and value is not None:
        return f"{value}/{_get(row, 'admin_form', 'sent')}"
    if name == "open" and value is not None:
        return f"{value}/{row['streams']}"
    return _fmt(value)


def table(results: list[dict[str, Any]]) -> str:
    """Return the results as a Markdown table: each N, ours, naive, and naive / ours."""
    header = ["streams", "design", *(name for name, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * len(COLUMNS)]
    notes = []
    for n in sorted({r["streams"] for r in results}):
        rows = {r["design"]: r for r in results if r["streams"] == n}
        for design in ("ours", "naive"):
            row = rows.get(design)
            if row is None:
                continue
            if "skipped" in row:
                lines.append(
                    f"| {n:,} | {design} | not run ({row['skipped']}) |" + " |" * (len(COLUMNS) - 1)
                )
                continue
            cells = [_cell(row, name, keys) for name, keys in COLUMNS]
            lines.append(f"| {n:,} | {design} | " + " | ".join(cells) + " |")
            if row.get("error"):
                notes.append(f"{design}, {n:,} streams: {row['error']}")
            if row.get("refused"):
                notes.append(f"{design}, {n:,} streams: refused {row['refused']}")
            for name in ("flood", "slow_client"):
                if _get(row, name, "error"):
                    notes.append(f"{design}, {n:,} streams: {name}: {row[name]['error']}")
            flood = row.get("flood")
            if flood and "error" not in flood:
                notes.append(
                    f"{design}, {n:,} streams: one account tried {flood['tried']} streams: "
                    f"{flood['accepted']} accepted, refused {flood['refused'] or 'none'}; "
                    f"everyone else's p99 meanwhile {_fmt(_get(flood, 'others', 'p99_ms'))} ms"
                )
            slow = row.get("slow_client")
            if slow and "error" not in slow:
                notes.append(
                    f"{design}, {n:,} streams: {slow['sent_mb']} MB sent to a client that does "
                    f"not read: server RSS +{slow['rss_growth_mb']} MB; everyone else's p99 "
                    f"meanwhile {_fmt(_get(slow, 'others', 'p99_ms'))} ms"
                )
            for phase in ("other_process", "admin_form"):
                for key in ("post_failed", "error"):
                    if _get(row, phase, key):
                        notes.append(f"{design}, {n:,} streams: {phase} {key}: {row[phase][key]}")
            for key in ("duplicates", "wrong_user"):
                if row.get(key):
                    notes.append(f"{design}, {n:,} streams: {key} {row[key]}")
        ours, naive = rows.get("ours"), rows.get("naive")
        if ours and naive and "skipped" not in naive and "skipped" not in ours:
            cells = []
            for name, keys in COLUMNS:
                a, b = _get(ours, *keys), _get(naive, *keys)
                if (
                    name in RATIO_COLUMNS
                    and isinstance(a, int | float)
                    and isinstance(b, int | float)
                    and a > 0
                ):
                    cells.append(f"×{b / a:,.1f}")
                else:
                    cells.append("")
            label = "naive / ours"
            if (naive.get("opened") or 0) < n:
                label += f" (naive held {naive.get('opened') or 0:,} streams)"
            lines.append(f"| {n:,} | {label} | " + " | ".join(cells) + " |")
    if notes:
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines)


def chart(results: list[dict[str, Any]], path: Path, title: str) -> None:
    """Draw latency p50/p99 and idle CPU against N, ours beside naive, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, cpu, queries) = plt.subplots(1, 3, figsize=(15, 4.6))
    styles = {"ours": ("tab:blue", "o"), "naive": ("tab:red", "s")}
    for design, (color, marker) in styles.items():
        rows = sorted(
            (
                r
                for r in results
                if r["design"] == design and "skipped" not in r and "error" not in r
            ),
            key=lambda r: r["streams"],
        )
        if not rows:
            continue
        ns = [r["streams"] for r in rows]
        for key, dash in (("p50_ms", "-"), ("p99_ms", "--")):
            points = [(n, _get(r, "other_process", key)) for n, r in zip(ns, rows, strict=True)]
            points = [(n, v) for n, v in points if v is not None]
            if points:
                latency.plot(
                    *zip(*points, strict=True),
                    dash,
                    color=color,
                    marker=marker,
                    label=f"{design} {key.split('_')[0]}",
                )
        cpu.plot(
            ns, [r.get("cpu_percent") for r in rows], "-", color=color, marker=marker, label=design
        )
        queries.plot(
            ns,
            [r.get("queries_per_s") for r in rows],
            "-",
            color=color,
            marker=marker,
            label=design,
        )
        skipped = [r["streams"] for r in results if r["design"] == design and "skipped" in r]
        for n in skipped:
            cpu.annotate("not run", (n, 0), color=color, fontsize=8, ha="center", va="bottom")
    latency.set_title("Delivery latency, row created by another process")
    latency.set_ylabel("ms (log)")
    latency.set_yscale("log")
    cpu.set_title("Server CPU at idle")
    cpu.set_ylabel("% of one core")
    queries.set_title("Database queries per second at idle")
    queries.set_ylabel("queries/s (log)")
    queries.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}")
    for axis in (latency, cpu, queries):
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(plain)
        axis.yaxis.set_major_formatter(plain)
        axis.set_xlabel("open streams (log)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
