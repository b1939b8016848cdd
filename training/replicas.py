"""Replica arithmetic: how a global batch splits over replicas, and the one way a split
whose last batch would leave a replica empty is padded.

TensorFlow gives each replica `ceil(batch / replicas)` examples of a batch until it runs
out (`replica_shares`), so a small last batch can leave a replica with none, and a
training step on an empty share turns batch norm's statistics, then every weight, into
NaN (with oneDNN, a convolution over an empty batch even fails). `check_batch_size`
refuses a global batch that always does so. Every pipeline whose last batch would do so
(training or evaluation, one machine or many) appends a few of its own examples again
with sample weight 0 (`pad_with_zero_weights`): they fill the share, and count in no
loss, gradient or metric.

Examples:
>>> replica_shares(5, 4)
[2, 2, 1, 0]
>>> padding_for_replicas(num_examples=9, batch_size=8, replicas=4)
1
"""

from __future__ import annotations

import math

import tensorflow as tf


def replica_shares(batch: int, replicas: int) -> list[int]:
    """How many examples of a `batch` each of `replicas` replicas gets from TensorFlow's
    `experimental_distribute_dataset`: `ceil(batch / replicas)` each, in order, until the
    batch runs out (5 over 4: [2, 2, 1, 0]). Tested against TensorFlow's own split."""
    chunk = math.ceil(batch / replicas)
    return [max(0, min(chunk, batch - i * chunk)) for i in range(replicas)]


def check_batch_size(batch_size: int, replicas: int) -> None:
    """Raises ValueError when every global batch would leave a replica with no examples."""
    shares = replica_shares(batch_size, replicas)
    if min(shares) == 0:
        multiple = replicas * max(1, round(batch_size / replicas))
        raise ValueError(
            f"batch size {batch_size} leaves a replica with no examples over {replicas} "
            f"replicas (split {shares}); use a multiple of {replicas}, such as {multiple}"
        )


def check_divisible_batch(batch_size: int, replicas: int) -> None:
    """Per-worker pipelines batch per replica: the global batch must divide evenly.

    Raises:
        ValueError: naming the batch size and the replicas.
    """
    if batch_size % replicas:
        multiple = replicas * max(1, round(batch_size / replicas))
        raise ValueError(
            f"batch size {batch_size} is not a multiple of the {replicas} replicas in sync; "
            f"MultiWorkerMirroredStrategy batches per replica: use a multiple such as {multiple}"
        )


def padding_for_replicas(num_examples: int, batch_size: int, replicas: int) -> int:
    """The fewest padding examples after which the last batch of `num_examples` (in
    batches of `batch_size`) gives every replica at least one example (0 when it already
    does)."""
    pad = 0
    while True:
        last = (num_examples + pad) % batch_size
        if last == 0 or min(replica_shares(last, replicas)) > 0:
            return pad
        pad += 1


def pad_with_zero_weights(
    ds: tf.data.Dataset, n: int, pad: int, *, source: tf.data.Dataset | None = None
) -> tf.data.Dataset:
    """`ds`'s `n` `(x, y)` examples, then `pad` of its first examples again, as
    `(x, y, weight)`: weight 1.0 for the `n` examples, 0.0 for the padding.

    The one padding convention of the project: Keras's `fit`/`evaluate`, the multi-worker
    loop and `training.evaluate` weight every loss and metric by it.

    Args:
        ds: tf.data.Dataset. Unbatched `(x, y)` examples.
        n: int. How many examples `ds` holds.
        pad: int. Padding examples to append (0: every weight is 1.0).
        source: tf.data.Dataset or None. Where the padding examples come from, repeated
            as needed (a worker with no examples of its own pads from the whole split).
            Defaults to `ds`.

    Example:
    >>> ds = tf.data.Dataset.from_tensor_slices(([10, 20, 30], [0, 1, 2]))
    >>> [(int(x), int(y), float(w)) for x, y, w in pad_with_zero_weights(ds, 3, 2)]
    [(10, 0, 1.0), (20, 1, 1.0), (30, 2, 1.0), (10, 0, 0.0), (20, 1, 0.0)]
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0; received {pad!r}")
    if pad:
        ds = ds.concatenate((ds if source is None else source).repeat().take(pad))
    weights = tf.data.Dataset.range(n + pad).map(lambda i: tf.cast(i < n, tf.float32))
    return tf.data.Dataset.zip(ds, weights).map(lambda xy, w: (*xy, w))


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


def logical_cpu_replicas(strategy: tf.distribute.Strategy) -> int:
    """How many logical CPU devices a MirroredStrategy mirrors over (0 for any other
    strategy, or for one device): XLA fails there, so `jit_compile` stays off."""
    if not isinstance(strategy, tf.distribute.MirroredStrategy):
        return 0
    devices = strategy.extended.worker_devices
    if len(devices) < 2 or not all("CPU" in d.upper() for d in devices):
        return 0
    return len(devices)
