"""What a run ran on: CPU model, cores, oneDNN, threads; printed and kept in metrics.json.

A CPU-only figure means little without the CPU it was taken on: TensorFlow 2.21 trains
our small models about twice as fast with oneDNN as without, and turns oneDNN off by
default on CPUs without AVX512-VNNI/BF16, AVX-VNNI or AMX (see `training/__init__.py`,
which turns it on before TensorFlow loads). Every run prints `describe(info())` and
records `info()` in metrics.json.

Examples:

```python
>>> print(describe(info()))
machine: AMD EPYC, 2 cores; oneDNN on (TF_ENABLE_ONEDNN_OPTS=1: keras-inception's
default); threads: intra-op 0, inter-op 0 (0: TensorFlow's choice)
```
"""

from __future__ import annotations

import os
import platform

import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port

import training


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def onednn_enabled() -> bool:
    """Whether TensorFlow runs oneDNN kernels in this process (decided when it loaded)."""
    return bool(_pywrap_util_port.IsMklEnabled())


def onednn_setting() -> str:
    """Who decided oneDNN: the user's `TF_ENABLE_ONEDNN_OPTS`, our default, or TensorFlow."""
    variable = training.ONEDNN_VARIABLE
    if training.ONEDNN_USER_SETTING is not None:
        return f"{variable}={training.ONEDNN_USER_SETTING}: set by the user"
    if variable in os.environ:
        return f"{variable}={os.environ[variable]}: keras-inception's default"
    return f"{variable} unset: TensorFlow's default for this CPU"


def info() -> dict:
    """The machine's details as plain values (for metrics.json)."""
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "onednn": onednn_enabled(),
        "onednn_setting": onednn_setting(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "tensorflow": tf.__version__,
    }


def describe(details: dict) -> str:
    """One line for the console from `info()`; says what to do when oneDNN is off."""
    gpus = f"{details['gpus']} GPU(s)" if details["gpus"] else "no GPU"
    omp = f", OMP_NUM_THREADS={details['omp_num_threads']}" if details["omp_num_threads"] else ""
    line = (
        f"machine: {details['cpu']}, {details['cores']} cores, {gpus}; "
        f"oneDNN {'on' if details['onednn'] else 'off'} ({details['onednn_setting']}); "
        f"threads: intra-op {details['intra_op_threads']}, inter-op "
        f"{details['inter_op_threads']} (0: TensorFlow's choice){omp}"
    )
    defaulted = (
        training.ONEDNN_USER_SETTING is None and "keras-inception" in details["onednn_setting"]
    )
    if defaulted and not details["onednn"]:
        line += (
            f"\nnote: oneDNN is off, which halves CPU training speed on many CPUs. TensorFlow "
            f"was loaded before `training` could turn it on: set "
            f"{training.ONEDNN_VARIABLE}=1 in the environment, or before importing TensorFlow."
        )
    return line
