"""Process CPU time against wall time over timed regions: the tables' "CPU time/wall".

On some CPUs (issue 31: the Zen 5 EPYC, 2 cores) about half of fresh TensorFlow processes
run one core at a time for their whole life, at about half the speed: their CPU time
equals their wall time. Every benchmark table gives, per row, the CPU time / wall of the
process over that row's timed regions, so that a figure measured in that mode is never
mistaken for a fast one (about the core count when every core worked, about 1 when one
did).

This module imports neither TensorFlow nor torch: the torch process of
`benchmarks.peers` (`benchmarks/torch_worker.py`) measures itself with it too.
`benchmarks.common` re-exports `CpuTime`.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

Mark = tuple[float, float]  # (process CPU seconds, wall seconds) at one moment


def process_cpu_seconds() -> float:
    """User + system CPU time of this process so far, all its threads, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuTime:
    """CPU time and wall time summed over timed regions; `ratio` is their quotient.

    Args:
        cpu_clock: callable. The process's CPU time in seconds. Defaults to
            `process_cpu_seconds` (`resource.getrusage`, user + system).
        wall_clock: callable. Wall time in seconds. Defaults to `time.perf_counter`.

    Example:
    >>> cpu, wall = iter([0.0, 3.8]), iter([10.0, 12.0])
    >>> usage = CpuTime(cpu_clock=cpu.__next__, wall_clock=wall.__next__)
    >>> start = usage.mark()  # ... the timed work ...
    >>> usage.add(start, usage.mark())  # the region's wall seconds
    2.0
    >>> usage.ratio  # 3.8 s of CPU in 2 s: about two cores busy
    1.9
    """

    def __init__(
        self,
        cpu_clock: Callable[[], float] = process_cpu_seconds,
        wall_clock: Callable[[], float] = time.perf_counter,
    ):
        self.cpu_clock, self.wall_clock = cpu_clock, wall_clock
        self.cpu = 0.0  # CPU seconds over the regions added
        self.wall = 0.0  # wall seconds over the regions added

    def mark(self) -> Mark:
        """Now: (CPU seconds, wall seconds) on this object's clocks."""
        return self.cpu_clock(), self.wall_clock()

    def add(self, start: Mark, end: Mark) -> float:
        """Adds the region from mark `start` to mark `end`; returns its wall seconds."""
        return self.add_seconds(end[0] - start[0], end[1] - start[1])

    def add_seconds(self, cpu: float, wall: float) -> float:
        """Adds a region measured elsewhere (e.g. by another process, of its own CPU time):
        `cpu` CPU seconds in `wall` wall seconds; returns `wall`.

        Raises:
            ValueError: for a negative time (the clocks went backwards).
        """
        if cpu < 0 or wall < 0:
            raise ValueError(
                f"a timed region needs CPU and wall times >= 0; received cpu={cpu}, wall={wall}"
            )
        self.cpu += cpu
        self.wall += wall
        return wall

    @property
    def ratio(self) -> float:
        """CPU seconds / wall seconds over the regions added; NaN before any wall time."""
        return self.cpu / self.wall if self.wall > 0 else float("nan")
