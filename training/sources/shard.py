"""One worker's share of a split, for per-worker pipelines (MultiWorkerMirroredStrategy).

Every worker must run the same number of steps over a split, or the collectives hang:
each share is topped up to ``ceil(n / workers)`` examples. Training shares repeat their
first examples (and grow further if the last step would leave one of the worker's
replicas without an example); evaluation shares append examples labelled **-1**, which
every evaluation sum must mask out.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.sources.base import Split

PAD_LABEL = -1


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


def worker_records(
    split: Split, positions: np.ndarray, pad: int, *, train: bool
) -> tf.data.Dataset:
    """The records at ``positions`` (only those are read), then ``pad`` more: the worker's
    own first examples again (the split's, for a worker with none), labelled `PAD_LABEL`
    unless ``train``."""
    records = split.read(positions)
    if not pad:
        return records
    extra = (records if len(positions) else split.read()).repeat().take(pad)
    if not train:
        extra = extra.map(lambda x, y: (x, tf.constant(PAD_LABEL, y.dtype)))
    return records.concatenate(extra)
