"""One worker's share of a split, for per-worker pipelines (MultiWorkerMirroredStrategy).

Every worker must run the same number of steps over a split, or the collectives hang:
each share is topped up to ``ceil(n / workers)`` examples (and grows further for training
if the last step would leave one of the worker's replicas without an example). The top-up
is the project's one padding convention: the worker's own first examples again at sample
weight 0 (`training.replicas.pad_with_zero_weights`), so every share's elements are
``(x, y, weight)``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.replicas import check_divisible_batch, pad_with_zero_weights
from training.sources.base import Split

__all__ = ["check_divisible_batch", "shard_plan", "worker_records"]


def shard_plan(
    n: int, batch_size: int, context: tf.distribute.InputContext, *, train: bool
) -> tuple[np.ndarray, int]:
    """(positions of this worker's examples, examples appended to them).

    Args:
        n: int. Examples in the split.
        batch_size: int. Global batch size, a multiple of the replicas in sync.
        context: tf.distribute.InputContext. This worker's place in the cluster.
        train: bool. Pad for training (repeats that give every replica of the last step an
            example) rather than evaluation.

    Raises:
        ValueError: a batch size that is not a multiple of the replicas.
    """
    check_divisible_batch(batch_size, context.num_replicas_in_sync)
    workers = context.num_input_pipelines
    positions = np.array_split(np.arange(n), workers)[context.input_pipeline_id]
    size = -(-n // workers)
    if train and size:
        per_replica = context.get_per_replica_batch_size(batch_size)
        local = max(1, context.num_replicas_in_sync // workers)
        last = size % (per_replica * local)
        if last and last <= (local - 1) * per_replica:  # a replica would get no example
            size += (local - 1) * per_replica + 1 - last
    return positions, size - len(positions)


def worker_records(split: Split, positions: np.ndarray, pad: int) -> tf.data.Dataset:
    """The records at ``positions`` (only those are read), then ``pad`` more at weight 0:
    the worker's own first examples again (the split's, for a worker with none), as
    ``(x, y, weight)`` (`training.replicas.pad_with_zero_weights`)."""
    records = split.read(positions)
    source = records if len(positions) else split.read()
    return pad_with_zero_weights(records, len(positions), pad, source=source)
