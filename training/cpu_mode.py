"""How many cores a training process really used: its CPU time over its wall time.

On some CPUs (issue 31: the Zen 5 EPYC, 2 cores) about half of fresh TensorFlow training
processes run every kernel one after the other for their whole life: the process's CPU
time equals its wall time, both cores sit half idle, and training runs at half speed. The
cause is not known yet, so a run measures what it got instead. `CpuUsage` records, for each
epoch's training part, the process's CPU time / wall (`resource.getrusage`: user + system,
every thread) and the machine's idle share (`/proc/stat`). Together they tell the one-core
mode (the process under `ONE_CORE_BELOW` cores while the machine idles) from a shared
machine (other processes took the cores). It warns on the console in the one-core mode,
and `cpu_usage_metrics` puts the figures and the mode in metrics.json, so a figure taken
in the one-core mode is never mistaken for a fast one.

Examples:

>>> classify(1.88, cores=2, idle=0.02)
'all cores'
>>> classify(1.02, cores=2, idle=0.48)
'one core'
>>> classify(0.78, cores=2, idle=0.01)
'shared'
>>> classify(0.97, cores=1, idle=0.0)
'all cores'
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable

import keras

# A process of a multi-core machine whose CPU time/wall is under this used one core at a
# time (issue 31: 0.99-1.08 in the slow mode, 1.85-1.92 in the fast one on 2 cores).
ONE_CORE_BELOW = 1.3
# ... and it is the one-core mode when the machine had at least this share idle meanwhile
# (the slow mode leaves about half of 2 cores idle); under it, other processes had the CPU.
IDLE_AT_LEAST = 0.25
# Epochs whose training part is shorter than this are not classified: tracing and the
# first batches of a tiny run keep one core busy whatever the mode.
MIN_SECONDS = 10.0

Clock = Callable[[], float]


def process_cpu_seconds() -> float:
    """User + system CPU time of this process so far, all its threads, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_times(path: str = "/proc/stat") -> tuple[float, float] | None:
    """(idle, total) jiffies of every CPU of the machine from `/proc/stat`'s "cpu" line
    (idle counts iowait), or None where there is no such file (not Linux).

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix="stat", delete=False) as f:
    ...     _ = f.write("cpu  100 0 50 800 50 0 0 0 0 0\\ncpu0 1 2 3 4 5 6 7 8 9 10\\n")
    >>> machine_times(f.name)
    (850.0, 1000.0)
    """
    try:
        with open(path, encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [float(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    # already counted in user and nice.
    return values[3] + values[4], sum(values[:8])


def classify(cpu_per_wall: float, cores: int, idle: float | None) -> str:
    """ "one core" when a process of a `cores`-core machine kept under `ONE_CORE_BELOW`
    cores busy while the machine was at least `IDLE_AT_LEAST` idle (or its idle share,
    `idle`, is unknown); "shared" when it kept under that many busy because other
    processes had the cores; "all cores" otherwise, and always on one core."""
    if cores < 2 or cpu_per_wall >= ONE_CORE_BELOW:
        return "all cores"
    if idle is not None and idle < IDLE_AT_LEAST:
        return "shared"
    return "one core"


def one_core_warning(epoch: int, cpu_per_wall: float, cores: int, idle: float | None) -> str:
    """The console warning for an epoch that trained on one core of `cores`."""
    idled = f", the machine {idle:.0%} idle" if idle is not None else ""
    return (
        f"warning: epoch {epoch} trained on one core at a time (CPU time/wall "
        f"{cpu_per_wall:.2f} on {cores} cores{idled}): this process is in the one-core "
        "slow mode of issue 31 and trains at up to half speed for its whole life. Stop it "
        "and start it again (training resumes from the last finished epoch); "
        "`python -m benchmarks.threads` counts how often fresh processes start so."
    )


class CpuUsage(keras.callbacks.Callback):
    """Each epoch's training CPU time / wall and machine idle share from its second step
    on, kept in the JSON file at `path` across resumed runs (a resumed run is a new
    process, whose mode may differ).

    Args:
        path: str. The JSON file: {epoch: {"cpu": s, "wall": s, "cpu_per_wall": r,
            "machine_idle": share or null, "pid": process id}}.
        cores: int. The cores the process may use (`training.machine.usable_cores()`).
        clock: callable. Wall time in seconds. Defaults to `time.perf_counter`.
        cpu_clock: callable. Process CPU time in seconds. Defaults to
            `process_cpu_seconds`.
        machine_clock: callable. The machine's (idle, total) CPU time, or None. Defaults to
            `machine_times`.
        verbose: bool. Print `one_core_warning` for an epoch of at least `MIN_SECONDS`
            that ran in the one-core mode. Defaults to True.
    """

    def __init__(
        self,
        path: str,
        cores: int,
        *,
        clock: Clock = time.perf_counter,
        cpu_clock: Clock = process_cpu_seconds,
        machine_clock: Callable[[], tuple[float, float] | None] = machine_times,
        verbose: bool = True,
    ):
        super().__init__()
        self.path, self.cores, self.verbose = path, cores, verbose
        self.clocks = (clock, cpu_clock, machine_clock)
        self.epochs: dict[str, dict] = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                self.epochs = json.load(f)
        self._start: tuple | None = None
        self._train: dict | None = None

    def _read(self) -> tuple:
        return tuple(clock() for clock in self.clocks)

    def _since_start(self) -> dict:
        (wall0, cpu0, machine0), (wall1, cpu1, machine1) = self._start, self._read()
        wall, cpu = wall1 - wall0, cpu1 - cpu0
        idle = None
        if machine0 is not None and machine1 is not None and machine1[1] > machine0[1]:
            idle = (machine1[0] - machine0[0]) / (machine1[1] - machine0[1])
        return {
            "cpu": cpu,
            "wall": wall,
            "cpu_per_wall": cpu / wall if wall > 0 else 0.0,
            "machine_idle": idle,
            "pid": os.getpid(),
        }

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train = self._read(), None

    def on_train_batch_end(self, batch, logs=None):
        # The clock starts again after an epoch's first step: the first epoch's traces
        # the graph on one thread, which would read as the one-core mode.
        if batch == 0 and self._train is None:
            self._start = self._read()

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train is None:  # the epoch's training ends
            self._train = self._since_start()

    def on_epoch_end(self, epoch, logs=None):
        if self._start is None:
            return
        record = self._train or self._since_start()
        self.epochs[str(epoch + 1)] = record
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump(self.epochs, f, indent=2)
        ratio, idle = record["cpu_per_wall"], record["machine_idle"]
        if (
            self.verbose
            and record["wall"] >= MIN_SECONDS
            and classify(ratio, self.cores, idle) == "one core"
        ):
            print(one_core_warning(epoch + 1, ratio, self.cores, idle))


def cpu_usage_metrics(epochs: dict[str, dict], cores: int) -> dict:
    """metrics.json's record of `CpuUsage.epochs`: every epoch's CPU time/wall and machine
    idle share, the epochs (of at least `MIN_SECONDS`) that ran in the one-core mode, and
    the run's mode: "all cores", "one core" (every such epoch), "mixed" (the run's processes
    differed), "shared" (other processes had the cores), or "unmeasured" when no epoch
    was long enough.

    >>> epochs = {"1": {"wall": 20.0, "cpu_per_wall": 1.85, "machine_idle": 0.03},
    ...           "2": {"wall": 20.0, "cpu_per_wall": 1.02, "machine_idle": 0.49}}
    >>> cpu_usage_metrics(epochs, cores=2)["mode"]
    'mixed'
    >>> cpu_usage_metrics(epochs, cores=2)["one_core_epochs"]
    [2]
    """
    order = sorted(epochs, key=int)
    kinds = {
        int(k): classify(epochs[k]["cpu_per_wall"], cores, epochs[k].get("machine_idle"))
        for k in order
        if epochs[k]["wall"] >= MIN_SECONDS
    }
    slow = [epoch for epoch, kind in kinds.items() if kind == "one core"]
    seen = set(kinds.values())
    if not seen:
        mode = "unmeasured"
    elif len(seen) == 1:
        mode = seen.pop()
    elif "one core" in seen:
        mode = "mixed"
    else:
        mode = "shared"  # all cores in some epochs, other processes' in the rest
    return {
        "cores": cores,
        "cpu_per_wall": [epochs[k]["cpu_per_wall"] for k in order],
        "machine_idle": [epochs[k].get("machine_idle") for k in order],
        "one_core_epochs": slow,
        "mode": mode,
    }


def describe(metrics: dict) -> str:
    """One console line from `cpu_usage_metrics`.

    >>> describe({"cores": 2, "cpu_per_wall": [1.9, 1.86], "one_core_epochs": [],
    ...           "mode": "all cores"})
    'CPU time/wall while training: 1.86-1.90 on 2 cores (all cores)'
    """
    ratios = metrics["cpu_per_wall"]
    if not ratios:
        return "CPU time/wall while training: not measured"
    low, high = f"{min(ratios):.2f}", f"{max(ratios):.2f}"
    span = low if low == high else f"{low}-{high}"
    return f"CPU time/wall while training: {span} on {metrics['cores']} cores ({metrics['mode']})"
