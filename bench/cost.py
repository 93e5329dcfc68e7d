"""Cost per event: what a benchmark phase cost every process of its stack, and the stores' work.

- CPU seconds per process, from ``/proc/<pid>/stat``: a process's own user and system time plus the time of its
  children it has reaped, summed over its live descendants. A child that exits and is reaped between two snapshots
  moves from the live sum into its parent's reaped time, so a delta loses none of it (prefork children, a Redis
  rewrite's fork).
- Redis commands, from ``INFO commandstats`` deltas (the server's own count; a command a script runs counts too), less
  the commands the benchmark itself sent to watch the stack (its polls).
- Rows written to ClickHouse: the caller's count before and after (the engine's ``InsertedRows``, or a server's
  ``query_log``), every table and materialized view included.

The computations on snapshots (deltas, per-1,000-event scaling) are plain functions of numbers, tested on their own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")
TOP_COMMANDS = 8  # the Redis commands of a phase listed one by one in the JSON figures


# ---------------------------------------------------------------------------------------------------------------
# Pure computations
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """The figures of one ``/proc/<pid>/stat`` line this module uses (times in seconds)."""

    pid: int
    ppid: int
    own_s: float  # utime + stime
    reaped_s: float  # cutime + cstime: children waited for


def parse_stat(line: str, ticks: int = CLOCK_TICKS) -> ProcStat:
    """Parse a ``/proc/<pid>/stat`` line. The command name (field 2) may hold spaces and parentheses: the fields
    after it are split after its last ``)``."""
    pid = int(line.split(" ", 1)[0])
    rest = line[line.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    utime, stime, cutime, cstime = (int(v) for v in rest[11:15])
    return ProcStat(pid, int(rest[1]), (utime + stime) / ticks, (cutime + cstime) / ticks)


def descendants(root: int, parents: Mapping[int, int]) -> set[int]:
    """``root`` and every process below it, from a map of pid to parent pid."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_seconds(roots: Iterable[int], stats: Mapping[int, ProcStat]) -> float:
    """CPU seconds of ``roots`` and their descendants: each live process's own time plus what it reaped."""
    parents = {s.pid: s.ppid for s in stats.values()}
    pids: set[int] = set()
    for root in roots:
        if root in stats:
            pids |= descendants(root, parents)
    return sum(stats[p].own_s + stats[p].reaped_s for p in pids)


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """``after - before`` per key of ``after`` (a key new in ``after`` counts from 0)."""
    return {k: v - before.get(k, 0) for k, v in after.items()}


def per_thousand(value: float, events: int) -> float:
    """``value`` per 1,000 events (NaN when no event was ingested)."""
    return value * 1000 / events if events else float("nan")


def per_unit(value: float, units: int) -> float:
    return value / units if units else float("nan")


def command_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Calls per command between two ``commandstats`` readings, the commands that ran only."""
    return {k: n - before.get(k, 0) for k, n in sorted(after.items()) if n - before.get(k, 0)}


def less_own(commands: Mapping[str, int], own: Mapping[str, int]) -> dict[str, int]:
    """``commands`` without those the benchmark sent itself (never below 0)."""
    out = {k: max(0, n - own.get(k, 0)) for k, n in commands.items()}
    return {k: n for k, n in out.items() if n}


# ---------------------------------------------------------------------------------------------------------------
# Reading the machine
# ---------------------------------------------------------------------------------------------------------------


def read_stats() -> dict[int, ProcStat]:
    """Every process's stat line that can be read now (processes come and go while the directory is read)."""
    out = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            out[int(entry.name)] = parse_stat((entry / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
    return out


def listening_pid(port: int) -> int | None:
    """The pid of this user's process listening on TCP ``port`` (from ``/proc/net/tcp*`` and the processes' open
    sockets), or None when none can be identified."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        path = PROC / "net" / table
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


def commandstats(r: redis.Redis) -> dict[str, int]:
    """Calls per command so far, from the server (``INFO commandstats``), less the INFO calls that read it."""
    stats: Any = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if name != "cmdstat_info"}


# ---------------------------------------------------------------------------------------------------------------
# A phase's cost
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    cpu_s: dict[str, float]
    commands: dict[str, int]
    rows: float | None  # rows written to ClickHouse so far (None: not measurable here)
    events: int
    own_commands: dict[str, int]


@dataclass
class PhaseCost:
    """What one phase cost: CPU seconds per process (role), per 1,000 events; rows per event; commands per
    message."""

    events: int
    messages: int
    cpu_s: dict[str, float]
    commands: dict[str, int]
    rows: float | None
    notes: dict[str, float] = field(default_factory=dict)

    @classmethod
    def between(cls, before: Snapshot, after: Snapshot, messages: int) -> PhaseCost:
        own = {k: n - before.own_commands.get(k, 0) for k, n in after.own_commands.items()}
        rows = None if before.rows is None or after.rows is None else after.rows - before.rows
        return cls(
            events=after.events - before.events,
            messages=messages,
            cpu_s=delta(before.cpu_s, after.cpu_s),
            commands=less_own(command_delta(before.commands, after.commands), own),
            rows=rows,
        )

    def cpu_per_1k(self) -> dict[str, float]:
        """CPU seconds per 1,000 events of each role, and their ``total``."""
        out = {role: per_thousand(s, self.events) for role, s in self.cpu_s.items()}
        out["total"] = per_thousand(sum(self.cpu_s.values()), self.events)
        return out

    def figures(self, prefix: str) -> dict[str, float]:
        """Flat figures for the JSON output, each key ending in its unit."""
        f = {f"{prefix}_cpu_s_per_1k_events_{role}": v for role, v in self.cpu_per_1k().items()}
        f[f"{prefix}_events"] = self.events
        f[f"{prefix}_messages"] = self.messages
        f[f"{prefix}_redis_commands_per_message"] = per_unit(sum(self.commands.values()), self.messages)
        f[f"{prefix}_redis_commands_per_event"] = per_unit(sum(self.commands.values()), self.events)
        f[f"{prefix}_clickhouse_rows_per_event"] = (
            per_unit(self.rows, self.events) if self.rows is not None else float("nan")
        )
        top = sorted(self.commands.items(), key=lambda kv: -kv[1])[:TOP_COMMANDS]
        f.update({f"{prefix}_redis_{name}_per_message": per_unit(n, self.messages) for name, n in top})
        f.update({f"{prefix}_{k}": v for k, v in self.notes.items()})
        return f


def cpu_text(seconds: float) -> str:
    """CPU seconds with three significant decimals below 0.1 (a batched event's cost), two above."""
    return "n/a" if math.isnan(seconds) else f"{seconds:.3f}" if abs(seconds) < 0.1 else f"{seconds:.2f}"


def cost_rows(
    label: str, f: Mapping[str, float], prefix: str, roles: Iterable[str], where: str = ""
) -> list[tuple[str, str, str]]:
    """Three table rows of one phase's cost from its flat figures: CPU per 1,000 events by process (``where``: a
    note on the processes), ClickHouse rows per event, Redis commands per message."""
    key = f"{prefix}_cpu_s_per_1k_events_"
    parts = " · ".join(f"{role} {cpu_text(f[key + role])}" for role in roles if key + role in f)
    rows_per_event = f[f"{prefix}_clickhouse_rows_per_event"]
    return [
        (
            f"{label} CPU s / 1,000 events",
            f"{cpu_text(f[key + 'total'])} CPU s",
            parts + (f" ({where})" if where else ""),
        ),
        (
            f"{label} ClickHouse rows / event",
            "n/a" if math.isnan(rows_per_event) else f"{rows_per_event:.2f} rows",
            "written to every table and view",
        ),
        (
            f"{label} Redis commands / message",
            f"{f[f'{prefix}_redis_commands_per_message']:.1f} commands",
            f"{f[f'{prefix}_redis_commands_per_event']:.2f} / event; cache, buffer and broker: one server",
        ),
    ]
