"""CPU seconds and peak memory of this process and all its descendants, sampled from /proc.

A Flower simulation runs in child processes (SuperLink, simulation runtime, Ray
workers) that this process does not always wait for, so
``getrusage(RUSAGE_CHILDREN)`` misses part of their CPU time. :class:`TreeSampler`
polls /proc instead. Every ``interval_s`` it finds the descendants of this process
(by parent pid) and records each one's user plus system CPU time and its
proportional set size (PSS, which splits shared pages between the processes that
map them, so the sum over processes does not count shared libraries twice).

NOTE: a process that starts and ends between two samples is missed, and the CPU
time a process spends after its last sample is lost, so the CPU total is a lower
bound (off by at most ``interval_s`` per process). Linux only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _read_stat(pid: int) -> tuple[str, int, int, int] | None:
    """Return ``(name, parent pid, cpu ticks, start time)`` of ``pid``, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # Fields after the name: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19).
    return name, int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])


def _pss_bytes(pid: int) -> int:
    """Return the proportional set size of ``pid`` in bytes (resident size if PSS is unavailable)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def descendant_stats(root: int) -> dict[int, tuple[str, int, int, int]]:
    """Return ``_read_stat`` of every live descendant of ``root`` (children, grandchildren, ...)."""
    table: dict[int, tuple[str, int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read_stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, stat in table.items():
        children.setdefault(stat[1], []).append(pid)
    found: dict[int, tuple[str, int, int, int]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for child in children.get(parent, []):
            if child not in found:
                found[child] = table[child]
                frontier.append(child)
    return found


class TreeSampler:
    """Sample CPU time and memory of this process tree in a background thread.

    Use as a context manager, then read :meth:`summary`. ``interval_s`` is the
    polling period in seconds; ``memory`` turns the (slower) PSS sampling on.
    """

    def __init__(self, interval_s: float = 0.5, *, memory: bool = True) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s={interval_s!r} is invalid; use a positive number of seconds")
        self.interval_s = interval_s
        self.memory = memory
        self.root = os.getpid()
        self._cpu_ticks: dict[tuple[int, int], int] = {}
        self._names: dict[tuple[int, int], str] = {}
        self._peak_tree_bytes = 0
        self._peak_children_bytes = 0
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)
        self._started = 0.0
        self._wall = 0.0

    def __enter__(self) -> "TreeSampler":
        self._started = time.perf_counter()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._wall = time.perf_counter() - self._started

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample()
            except Exception as error:  # keep sampling: a vanished /proc entry must not end the thread
                logger.debug("process sampling failed once: %r", error)

    def _sample(self) -> None:
        stats = descendant_stats(self.root)
        for pid, (name, _, ticks, start) in stats.items():
            key = (pid, start)
            self._cpu_ticks[key] = max(ticks, self._cpu_ticks.get(key, 0))
            self._names[key] = name
        if self.memory:
            children = sum(_pss_bytes(pid) for pid in stats)
            self._peak_children_bytes = max(self._peak_children_bytes, children)
            self._peak_tree_bytes = max(self._peak_tree_bytes, children + _pss_bytes(self.root))
        self._samples += 1

    def summary(self) -> dict[str, Any]:
        """Return CPU seconds of the descendants, peak memory (bytes) and the process names seen.

        ``descendants_cpu_s`` sums the sampled CPU time of every descendant process;
        ``peak_tree_pss_bytes`` is the peak PSS of this process plus its descendants and
        ``peak_descendants_pss_bytes`` that of the descendants alone.
        """
        names: dict[str, int] = {}
        for key, name in self._names.items():
            names[name] = names.get(name, 0) + 1
        return {
            "interval_s": self.interval_s,
            "samples": self._samples,
            "wall_s": self._wall,
            "descendants_cpu_s": sum(self._cpu_ticks.values()) / _CLOCK_TICKS,
            "descendant_processes": len(self._cpu_ticks),
            "process_names": dict(sorted(names.items())),
            "peak_tree_pss_bytes": self._peak_tree_bytes if self.memory else None,
            "peak_descendants_pss_bytes": self._peak_children_bytes if self.memory else None,
        }
