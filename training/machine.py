"""What a run ran on: CPU (model name, family, model, vector extensions), cores, oneDNN,
threads; printed and kept in metrics.json.

A CPU-only figure means little without the CPU it was taken on: TensorFlow 2.21 trains
our small models about twice as fast with oneDNN as without, and turns oneDNN off by
default on CPUs without AVX512-VNNI/BF16, AVX-VNNI or AMX (see `training/__init__.py`,
which turns it on before TensorFlow loads). Every run prints `describe(info())` and
records `info()` in metrics.json.

Examples:

```python
>>> print(describe(info()))
machine: AMD EPYC (family 25, model 1, AVX2), 2 cores, no GPU; oneDNN on
(TF_ENABLE_ONEDNN_OPTS=1: keras-inception's default); threads: intra-op 0, inter-op 0
(0: TensorFlow's choice)
```
"""

from __future__ import annotations

import os
import platform

import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port

import training

# The /proc/cpuinfo flags behind TensorFlow 2.21's oneDNN default (any of the last four
# turns it on) and the vector widths beside them. Our virtual machines name both a Zen 3
# (AVX2 only) and a Zen 4 (AVX-512 with VNNI and BF16) "AMD EPYC", and the two train at
# different speeds, so a figure needs the family, model and these flags beside the name.
ISA_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "avx_vnni": "AVX-VNNI",
    "amx_tile": "AMX",
}


def cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor's `key: value` lines of a /proc/cpuinfo text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def read_cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """`cpuinfo_fields` of the file at `path`; empty where there is none (not Linux)."""
    try:
        with open(path, encoding="utf-8") as f:
            return cpuinfo_fields(f.read())
    except OSError:
        return {}


def cpu_model(fields: dict[str, str] | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    fields = read_cpuinfo() if fields is None else fields
    return fields.get("model name") or platform.processor() or "unknown CPU"


def cpu_signature(fields: dict[str, str]) -> str:
    """ "family F, model M" from /proc/cpuinfo (AMD Zen 3 is 25/1, Zen 4 25/17); "" if absent."""
    if "cpu family" in fields and "model" in fields:
        return f"family {fields['cpu family']}, model {fields['model']}"
    return ""


def cpu_features(fields: dict[str, str]) -> list[str]:
    """The `ISA_FLAGS` this CPU has, by their usual names, in `ISA_FLAGS` order."""
    flags = set(fields.get("flags", "").split())
    return [name for flag, name in ISA_FLAGS.items() if flag in flags]


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
    fields = read_cpuinfo()
    return {
        "cpu": cpu_model(fields),
        "cpu_signature": cpu_signature(fields),
        "cpu_features": cpu_features(fields),
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
    identity = ", ".join(
        part
        for part in (details.get("cpu_signature"), " ".join(details.get("cpu_features", [])))
        if part
    )
    cpu = f"{details['cpu']} ({identity})" if identity else details["cpu"]
    line = (
        f"machine: {cpu}, {details['cores']} cores, {gpus}; "
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


# cpu_features names of the instructions that compute in bfloat16 (AMX: Sapphire Rapids'
# tiles, whose bf16 multiply comes with them on every AMX CPU so far).
BFLOAT16_FEATURES = ("AVX512-BF16", "AMX")


def bfloat16_note(details: dict, policy: str) -> str | None:
    """A note for the console when `policy` computes in bfloat16 on a CPU (no GPU) that
    has none of `BFLOAT16_FEATURES`; None otherwise. Such CPUs have no bfloat16
    arithmetic, so mixed precision may not pay there (the README's speed section has
    the measured gains on CPUs that have them)."""
    if policy != "mixed_bfloat16" or details["gpus"]:
        return None
    features = details.get("cpu_features", [])
    if any(name in features for name in BFLOAT16_FEATURES):
        return None
    has = " ".join(features) or "none of the flags read"
    return (
        f"note: mixed_bfloat16 on a CPU without bfloat16 instructions (AVX512-BF16 or AMX; "
        f"this one has {has}): it has no bfloat16 arithmetic, so this may train slower "
        "than float32. Compare first: python -m benchmarks.models --models googlenet "
        "--mixed-precision, then without it."
    )
