"""Distribution strategies: MirroredStrategy over GPUs, or over logical CPUs.

Logical CPU devices must be configured before TensorFlow runs its first op, so
`make_strategy` is called first thing by the command line and by `train_and_evaluate`.
`jit_compile` must stay off under MirroredStrategy on logical CPUs (it fails there).
"""

from __future__ import annotations

import tensorflow as tf


def configure_cpu_replicas(replicas: int) -> None:
    """Splits the first CPU into `replicas` logical devices (before any TF op runs)."""
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is not None and len(current) == replicas:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )
    except RuntimeError as err:
        raise RuntimeError(
            f"cannot split the CPU into {replicas} logical devices: TensorFlow already "
            "initialized its devices in this process. Request replicas before any "
            "TensorFlow op runs (a fresh process)."
        ) from err


def make_strategy(replicas: int | None = None) -> tf.distribute.Strategy:
    """MirroredStrategy over all GPUs; on CPU, over `replicas` logical CPUs; else one device.

    Args:
        replicas: int or None. CPU replicas when no GPU is visible (None or 1: one device).
            Ignored when GPUs are visible: every GPU is a replica.
    """
    if replicas is not None and (isinstance(replicas, bool) or replicas < 1):
        raise ValueError(f"replicas must be a positive integer; received {replicas!r}")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return (
            tf.distribute.MirroredStrategy()
            if len(gpus) > 1
            else tf.distribute.OneDeviceStrategy("/gpu:0")
        )
    if replicas and replicas > 1:
        configure_cpu_replicas(replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    return tf.distribute.OneDeviceStrategy("/cpu:0")


def mixed_precision_policy() -> str:
    """The mixed policy for this machine: mixed_float16 on GPU, mixed_bfloat16 on CPU."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
