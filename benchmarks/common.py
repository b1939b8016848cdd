"""Helpers shared by the benchmark scripts: machine line, timing, matmul rate, tables,
the demo models.

Every figure a script prints is meant to be read as a ratio against a baseline measured
in the same process, interleaved with it (A B A B ...): the machines these run on are
shared and noisy, so an absolute time alone means little.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import keras
import tensorflow as tf

import keras_inception as ki
from training import machine

FLOP_CONVENTION = (
    "FLOPs: a multiply-add is 2 FLOPs; training = 3 x forward (backward ~ 2 x forward), "
    "so training FLOPs/image = 6 x forward multiply-adds; conv and dense only."
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


def rate(fn: Callable[[], object], steps: int, items_per_step: int) -> float:
    """Items per second of `steps` calls of `fn` (its result is synced before the clock stops)."""
    start = time.perf_counter()
    result = None
    for _ in range(steps):
        result = fn()
    _sync(result)
    return steps * items_per_step / (time.perf_counter() - start)


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

    def measure(self) -> float:
        """One timed measurement, in GFLOP/s."""
        start = time.perf_counter()
        self._run(self.a, self.b).numpy()
        seconds = time.perf_counter() - start
        return 2.0 * self.n**3 * self.repeats / seconds / 1e9


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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1, with a message naming the value."""
    try:
        value = int(text)
    except ValueError as e:
        raise ValueError(f"expected a positive integer; received {text!r}") from e
    if value < 1:
        raise ValueError(f"expected a positive integer; received {text!r}")
    return value
