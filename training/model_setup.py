"""Model set-up shared by every driver (`fit`, the multi-worker loop, the tuner's trials).

The model's outputs decide the targets: a model with auxiliary heads has dict outputs
(`{"main", "aux1", "aux2"}`) and each label fans out to every head.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def output_names_of(model) -> list[str] | None:
    """The output names of a dict-output model (e.g. ``["main", "aux1", "aux2"]``), else None."""
    outputs = model.output
    return list(outputs.keys()) if isinstance(outputs, dict) else None


def with_targets(ds: tf.data.Dataset, output_names: Sequence[str] | None) -> tf.data.Dataset:
    """Fans each label out to ``{name: label}`` for a multi-output model (None: unchanged)."""
    if not output_names:
        return ds
    names = list(output_names)
    return ds.map(
        lambda x, y: (x, {name: y for name in names}), num_parallel_calls=tf.data.AUTOTUNE
    )
