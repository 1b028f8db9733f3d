"""Who runs a run: a process identity that survives pid reuse, and whether that process still lives.

A run executed in process (`de-assets run`, `execute_in_process`) has no run launcher watching it;
when its process is killed (kill -9, OOM, a closed laptop) Dagster keeps the run STARTED forever.
The run records the identity of its process in its tags; a sweep marks the run failed once that
process is gone. The identity is `<pid>:<start time>` (Linux: clock ticks since boot, from
/proc/<pid>/stat), so a pid reused by an unrelated process does not look alive.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

PROC = Path("/proc")


def _start_ticks(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/<pid>/stat), None when there is no such process."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) is in parentheses and may contain spaces: split after the last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):  # zombie or dead: the process no longer runs
        return None
    return fields[19]


def identity(pid: int | None = None) -> str:
    """`<pid>:<start time>` of a process (default: this one); `<pid>:` where /proc is not available."""
    pid = os.getpid() if pid is None else pid
    ticks = _start_ticks(pid) if PROC.is_dir() else None
    return f"{pid}:{ticks or ''}"


def host() -> str:
    return socket.gethostname()


def is_alive(process_identity: str) -> bool:
    """Whether the process of an `identity()` still runs (on this host)."""
    pid_text, _, ticks = process_identity.partition(":")
    pid = int(pid_text)
    if PROC.is_dir():
        current = _start_ticks(pid)
        return current is not None and (not ticks or current == ticks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
