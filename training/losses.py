"""Sparse-label cross-entropy with label smoothing (Keras's sparse loss has none).

Keras 3.15 has no built-in for it: `keras.losses.SparseCategoricalCrossentropy` takes no
`label_smoothing`, and `CategoricalCrossentropy` / `CategoricalFocalCrossentropy` smooth
one-hot labels only (they read the class count from the labels' last axis).

A `.keras` file of a model compiled with this loss records it as
"keras_inception_training>SparseCrossentropyWithSmoothing": it loads with `compile=True`
only where `training` is imported (with `compile=False` anywhere). A file meant to load
with Keras alone (inference.keras) is saved from an uncompiled model.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_inception_training")
class SparseCrossentropyWithSmoothing(keras.losses.Loss):
    """Categorical cross-entropy of one-hot(`y_true`) smoothed by `label_smoothing`.

    Args:
        label_smoothing: float. Weight moved from the true class to the uniform
            distribution ("Rethinking the Inception Architecture", section 7).
        from_logits: bool. Whether `y_pred` are logits.
    """

    def __init__(self, label_smoothing: float = 0.1, from_logits: bool = False, **kwargs):
        kwargs.setdefault("name", "sparse_crossentropy_smoothed")
        super().__init__(**kwargs)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1); received {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
        }
