"""Helpers shared by the benchmark scripts: machine line, timing (with each row's CPU
time/wall, `CpuTime`), matmul rate, tables, the demo models, and the command-line options
they share with `python -m training train`.

Every figure a script prints is meant to be read as a ratio against a baseline measured
in the same process, interleaved with it (A B A B ...): the machines these run on are
shared and noisy, so an absolute time alone means little.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import keras
import tensorflow as tf

import keras_inception as ki
from benchmarks.cpu_time import CpuTime, Mark, process_cpu_seconds  # noqa: F401  re-exported
from training import fields, machine, strategy

FLOP_CONVENTION = (
    "FLOPs: a multiply-add is 2 FLOPs; training = 3 x forward (backward ~ 2 x forward), "
    "so training FLOPs/image = 6 x forward multiply-adds; conv and dense only."
)
# Every table's column of the process's CPU time / wall over the row's timed regions
# (`CpuTime.ratio`): about the core count when every core worked, about 1 in issue 31's
# one-core mode.
CPU_COLUMN = "CPU time/wall"
CPU_NOTE = (
    f"{CPU_COLUMN}: the process's CPU time (user + system, all threads) / wall time over "
    "the row's timed steps; near the core count when every core worked, near 1 in the "
    "one-core mode of issue 31 (then the row's speeds are up to 2x low)."
)

# `make demo`'s GoogLeNet (the Makefile's DEMO_FLAGS), and the one it replaced, kept so
# that numbers measured on it stay reproducible: `build_googlenet` keyword arguments, for
# 28x28x1 images and 10 classes, and the batch each was trained at.
DEMO_MODELS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        # Stage 3 at 14x14, 4 at 7x7, 5 at 4x4; one output (a tensor, not a dict).
        "googlenet_demo": MappingProxyType(
            {"stem": "small_pool", "width_multiplier": 0.125, "min_depth": 16,
             "dropout": 0.0, "aux_logits": False}
        ),
        # Stage 3 at 28x28, 4 at 14x14, 5 at 7x7; outputs "main", "aux1", "aux2".
        "googlenet_demo_aux": MappingProxyType(
            {"stem": "small", "width_multiplier": 0.125, "min_depth": 8, "aux_logits": True}
        ),
    }
)  # fmt: skip
DEMO_BATCH_SIZES: Mapping[str, int] = MappingProxyType(
    {"googlenet_demo": 256, "googlenet_demo_aux": 128}
)
# The option giving each demo model's batch, in the scripts that run several models.
DEMO_BATCH_OPTIONS: Mapping[str, str] = MappingProxyType(
    {"googlenet_demo": "--demo-batch-size", "googlenet_demo_aux": "--demo-aux-batch-size"}
)


def build_demo(name: str, **kwargs: Any) -> keras.Model:
    """The demo model `name` of `DEMO_MODELS` (softmax outputs), 28x28x1, 10 classes;
    `kwargs` add to its `build_googlenet` arguments (e.g. `fused_batch_norm=False`).

    Example:
    >>> build_demo("googlenet_demo").output_shape
    (None, 10)
    """
    if name not in DEMO_MODELS:
        raise ValueError(f"unknown demo model {name!r}; choose from {list(DEMO_MODELS)}")
    return ki.build_googlenet(**DEMO_MODELS[name], input_shape=(28, 28, 1), classes=10, **kwargs)


def machine_description() -> str:
    """Two lines: CPU model, usable cores, GPUs, oneDNN and threads (`training.machine`);
    then the TF/Keras/Python versions and GPU names if any."""
    gpus = tf.config.list_physical_devices("GPU")
    gpu = ""
    if gpus:
        names = []
        for device in gpus:
            details = tf.config.experimental.get_device_details(device)
            names.append(details.get("device_name", device.name))
        gpu = f"GPU: {', '.join(names)}; "
    return (
        f"{machine.describe(machine.info())}\n"
        f"{gpu}TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"Python {platform.python_version()}"
    )


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rate(
    fn: Callable[[], object], steps: int, items_per_step: int, usage: CpuTime | None = None
) -> float:
    """Items per second of `steps` calls of `fn` (its result is synced before the clock
    stops); the timed region is added to `usage` (a row's `CpuTime`), whose wall clock
    times it.

    Example:
    >>> cpu, wall = iter([0.0, 1.5]), iter([10.0, 10.5])
    >>> usage = CpuTime(cpu_clock=cpu.__next__, wall_clock=wall.__next__)
    >>> rate(lambda: None, steps=4, items_per_step=8, usage=usage)  # 32 items in 0.5 s
    64.0
    >>> usage.ratio
    3.0
    """
    usage = usage if usage is not None else CpuTime()
    start = usage.mark()
    result = None
    for _ in range(steps):
        result = fn()
    _sync(result)
    return steps * items_per_step / usage.add(start, usage.mark())


def _sync(result) -> None:
    """Forces pending device work: reads one value of the (nested) result back."""
    for leaf in tf.nest.flatten(result):
        if hasattr(leaf, "numpy"):
            leaf.numpy()
            return


class MatmulRate:
    """This machine's fp32 `tf.linalg.matmul` rate (GFLOP/s) on `n` x `n` matrices."""

    def __init__(self, n: int = 2048, repeats: int = 4, dtype: str = "float32"):
        if n < 1 or repeats < 1:
            raise ValueError(f"matmul size and repeats must be positive; received {n}, {repeats}")
        self.n, self.repeats = n, repeats
        self.a = tf.random.normal([n, n], dtype=dtype)
        # Scaled so that repeated products keep values O(1) (no overflow, no denormals).
        self.b = tf.random.normal([n, n], dtype=dtype) / n**0.5

        @tf.function
        def run(a, b):
            c = a
            for _ in range(repeats):
                c = tf.linalg.matmul(c, b)  # each product needs the last: none is merged
            return c

        self._run = run
        self.measure()  # trace and warm up

    def measure(self, usage: CpuTime | None = None) -> float:
        """One timed measurement, in GFLOP/s: `repeats` products of 2 n^3 FLOPs each. The
        timed region is added to `usage` (a `CpuTime`), whose wall clock times it."""
        usage = usage if usage is not None else CpuTime()
        start = usage.mark()
        self._run(self.a, self.b).numpy()
        seconds = usage.add(start, usage.mark())
        return 2.0 * self.n**3 * self.repeats / seconds / 1e9


def run_and_report(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], list[dict]],
    columns: Sequence[str],
    describe: Callable[[argparse.Namespace, float], str] | str,
) -> list[dict]:
    """A script's `main` once its arguments are parsed: prints the machine lines, runs
    `run(args)`, prints `describe(args, seconds the run took)`, `CPU_NOTE` and the table of
    the rows' `columns`; returns the rows. A `describe` string is a `str.format` template
    of the arguments' names and `seconds`."""
    print(machine_description())
    start = time.perf_counter()
    rows = run(args)
    seconds = time.perf_counter() - start
    if isinstance(describe, str):
        print(describe.format(**vars(args), seconds=seconds))
    else:
        print(describe(args, seconds))
    print(CPU_NOTE)
    print(format_table(rows, columns))
    return rows


@dataclasses.dataclass(frozen=True)
class Script:
    """A benchmark script's command line, for the scripts whose `parse_args` only parses:
    `parse_args(argv)` with `build_parser()`, and `main(argv)`, which parses and then
    `run_and_report`s (`describe`: the lines above the table, see there).

    Example:
    >>> script = Script(lambda: new_parser("demo", "A demo."), lambda args: [], ["a"], "x")
    >>> script.parse_args([])
    Namespace()
    """

    build_parser: Callable[[], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], list[dict]]
    columns: Sequence[str]
    describe: Callable[[argparse.Namespace, float], str] | str

    def parse_args(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        return self.build_parser().parse_args(argv)

    def main(self, argv: Sequence[str] | None = None) -> list[dict]:
        """Parses `argv`, runs, prints the machine lines and the table; returns the rows."""
        return run_and_report(self.parse_args(argv), self.run, self.columns, self.describe)


def format_table(rows: list[dict], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of `rows` (floats printed with 3 significant digits or 1 decimal)."""
    columns = list(columns or (rows[0].keys() if rows else []))

    def cell(value) -> str:
        if isinstance(value, float):
            if value != value:  # NaN
                return "-"
            if abs(value) >= 100:
                return f"{value:,.0f}"
            if abs(value) >= 10:
                return f"{value:.1f}"
            return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    body = [[cell(row.get(col, "")) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(line[i]) for line in body]) for i, col in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in body:
        lines.append(
            "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |"
        )
    return "\n".join(lines)


class BadValue(argparse.ArgumentTypeError, ValueError):
    """A command-line value that breaks its option's rule: argparse prints the message
    after the option's name; called from Python, it is a ValueError."""


def new_parser(script: str, doc: str) -> argparse.ArgumentParser:
    """The parser of `python -m benchmarks.<script>`: described by the first paragraph of
    `doc` (the script's docstring), each option's default in its help."""
    return argparse.ArgumentParser(
        prog=f"python -m benchmarks.{script}",
        description=doc.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, with a message naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise BadValue(f"expected a positive integer; received {text!r}") from None
    if value < 1:
        raise BadValue(f"expected a positive integer; received {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0, with a message naming the value."""
    try:
        value = float(text)
    except ValueError:
        raise BadValue(f"expected a positive number; received {text!r}") from None
    if not 0 < value < float("inf"):
        raise BadValue(f"expected a positive number; received {text!r}")
    return value


# --- options named as `python -m training train` names them (issue 30) -------------------


# Each option's default in --help, but not "None": training's formatter.
HelpFormatter = fields.HelpFormatter


MIXED_POLICIES = ("mixed_bfloat16", "mixed_float16")


class _MixedPrecision(argparse.Action):
    """`--mixed-precision [POLICY]`: stores a Keras dtype policy name; without POLICY, the
    machine's mixed policy, as `python -m training train --mixed-precision` picks it."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values or strategy.mixed_precision_policy())


class _DeprecatedAlias(argparse.Action):
    """A retired spelling of an option: stores into the new option's dest and prints a
    one-line note naming the new spelling to stderr."""

    def __init__(self, option_strings, dest, *, convert=None, spelling=None, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.convert = convert or (lambda value: value)
        self.spelling = spelling

    def __call__(self, parser, namespace, values, option_string=None):
        value = self.convert(values)
        print(
            f"warning: {option_string} is deprecated and will be removed in the next release; "
            f"use {self.spelling(value)}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, value)


def add_deprecated_alias(
    parser: argparse.ArgumentParser,
    old: str,
    new: str,
    *,
    dest: str,
    convert: Callable[[Any], Any] | None = None,
    spelling: Callable[[Any], str] | None = None,
    **kwargs: Any,
) -> None:
    """Adds `old`, hidden from --help, as a deprecated spelling of the option `new` (which
    stores into `dest`): its value, `convert`ed, goes to `dest`, and a note on stderr says
    what to write instead (`spelling(value)`; default "NEW VALUE"). `kwargs` go to
    `add_argument` (`type`, `choices`, ...)."""
    parser.add_argument(
        old,
        dest=dest,
        action=_DeprecatedAlias,
        convert=convert,
        spelling=spelling or (lambda value: f"{new} {value}"),
        default=argparse.SUPPRESS,  # the new option's default stands
        help=argparse.SUPPRESS,
        **kwargs,
    )


def add_models(
    parser: argparse.ArgumentParser,
    models: Sequence[str],
    default: Sequence[str],
    help: str = "models to run",
) -> None:
    """`--models NAME [NAME ...]` (dest `models`): some of `models`; `default` without it."""
    parser.add_argument("--models", nargs="+", default=list(default), choices=models, help=help)


def add_demo_batch_sizes(parser: argparse.ArgumentParser) -> None:
    """`--demo-batch-size` and `--demo-aux-batch-size` (`DEMO_BATCH_OPTIONS`): the batch of
    each demo model, `DEMO_BATCH_SIZES` by default."""
    for name, option in DEMO_BATCH_OPTIONS.items():
        parser.add_argument(
            option, type=positive_int, default=DEMO_BATCH_SIZES[name], help=f"{name}'s batch"
        )


def add_width_multiplier(
    parser: argparse.ArgumentParser,
    default: float = 1.0,
    help: str = "scale every conv width: max(int(w * m), min_depth)",
) -> None:
    """training's `--width-multiplier` (dest `width_multiplier`); `--width` deprecated."""
    parser.add_argument("--width-multiplier", type=positive_float, default=default, help=help)
    add_deprecated_alias(
        parser, "--width", "--width-multiplier", dest="width_multiplier", type=positive_float
    )


def add_image_size(
    parser: argparse.ArgumentParser, option: str, default: int, whose: str, *, old: str
) -> None:
    """An input side (dest from `option`): training's `--image-size`, or
    `--<model>-image-size` where a script runs models at different sizes; `old` is its
    deprecated spelling."""
    dest = option.removeprefix("--").replace("-", "_")
    parser.add_argument(
        option, type=positive_int, default=default, help=f"input side of {whose} in pixels"
    )
    add_deprecated_alias(parser, old, option, dest=dest, type=positive_int)


def add_mixed_precision(
    parser: argparse.ArgumentParser, policies: Sequence[str] = MIXED_POLICIES, note: str = ""
) -> None:
    """`--mixed-precision [POLICY]`, dest `policy`: a Keras dtype policy name, "float32"
    without the flag. Bare, it means what training's `--mixed-precision` means
    (`training.strategy.mixed_precision_policy()`: mixed_float16 on GPU, mixed_bfloat16 on
    CPU); with one of `policies`, that policy on any machine. `note` ends the help text."""
    parser.add_argument(
        "--mixed-precision",
        dest="policy",
        action=_MixedPrecision,
        nargs="?",
        choices=policies,
        default="float32",
        metavar="POLICY",
        help="the dtype policy: float32 without this flag; with it, as in training, "
        "mixed_float16 on GPU and mixed_bfloat16 on CPU (final layers stay float32); "
        f"--mixed-precision POLICY ({', '.join(policies)}) picks one on any machine"
        + (f"; {note}" if note else ""),
    )


def add_retired_policy(parser: argparse.ArgumentParser) -> None:
    """`--policy POLICY`, the retired spelling of `--mixed-precision [POLICY]`."""
    add_deprecated_alias(
        parser,
        "--policy",
        "--mixed-precision",
        dest="policy",
        choices=("float32", *MIXED_POLICIES),
        spelling=policy_spelling,
    )


def policy_spelling(policy: str) -> str:
    """The command-line spelling that selects the dtype policy `policy`."""
    if policy == "float32":
        return "no --mixed-precision (float32 is the default)"
    return f"--mixed-precision {policy}"
