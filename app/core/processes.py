"""Child processes: stopping them (SIGTERM, a grace period, then SIGKILL), and finding them (Linux ``/proc``)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)


def terminate(processes: Iterable[subprocess.Popen | None], grace: float) -> None:
    """Send SIGTERM to every live process, wait up to ``grace`` s in all, then SIGKILL the rest."""
    alive = [p for p in processes if p is not None and p.poll() is None]
    for process in alive:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in alive:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %s did not stop within %.0f s; killing it", process.pid, grace)
            process.kill()
            process.wait()


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (none if it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Children, grandchildren and so on of ``pid``."""
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) ``pid`` has used so far; 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command, which may hold spaces
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
