"""Classification metrics of an evaluation: top-1, top-5, cross-entropy and the confusion
matrix, by one implementation that `training.evaluate` and the multi-worker loop share.

Each batch is reduced to weighted sums (`batch_sums`; a padding example has weight 0,
`training.replicas.pad_with_zero_weights`), sums add up over batches and workers, and
`means` divides by the examples counted. The per-example values are Keras's own:

- top-1: `keras.metrics.sparse_categorical_accuracy`, the first class of the highest
  probability (a tie goes to the lower class index);
- top-5: `keras.metrics.sparse_top_k_categorical_accuracy` (`tf.math.in_top_k`): a label
  tied with the fifth-highest probability counts as a hit;
- loss: `keras.losses.sparse_categorical_crossentropy` of the probabilities (clipped to
  Keras's epsilon, 1e-7);
- confusion: `tf.math.confusion_matrix` of the labels and the top-1 predictions.

Example:
>>> probs = tf.constant([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
>>> sums = batch_sums(tf.constant([1, 0]), probs, tf.constant([1.0, 1.0]))
>>> {k: round(float(v), 4) for k, v in means(sums).items()}
{'top1': 0.0, 'top5': 1.0, 'loss': 1.1513, 'count': 2.0}
"""

from __future__ import annotations

import keras
import tensorflow as tf

TOP_K = 5


def batch_sums(
    labels: tf.Tensor,
    probabilities: tf.Tensor,
    weights: tf.Tensor | None = None,
    *,
    num_classes: int | None = None,
) -> dict[str, tf.Tensor]:
    """The weighted sums of one batch: `top1`, `top5` (hits), `loss` (cross-entropy),
    `count` (the weights' sum) and, with `num_classes`, `confusion`
    (`[true][predicted]`, float32). Runs eagerly or inside a `tf.function`.

    Args:
        labels: int tensor `[batch]` (or `[batch, 1]`). True classes.
        probabilities: float tensor `[batch, classes]`. The model's softmax outputs.
        weights: float tensor `[batch]` or None. 0 for a padding example. Defaults to
            None (every example counts once).
        num_classes: int or None. Adds the confusion matrix of that many classes.
    """
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
    probabilities = tf.cast(probabilities, tf.float32)
    if weights is None:
        weights = tf.ones_like(labels, tf.float32)
    weights = tf.cast(tf.reshape(weights, [-1]), tf.float32)
    top1 = keras.metrics.sparse_categorical_accuracy(labels, probabilities)
    top5 = keras.metrics.sparse_top_k_categorical_accuracy(labels, probabilities, k=TOP_K)
    loss = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    sums = {
        "top1": tf.reduce_sum(tf.cast(top1, tf.float32) * weights),
        "top5": tf.reduce_sum(tf.cast(top5, tf.float32) * weights),
        "loss": tf.reduce_sum(tf.cast(loss, tf.float32) * weights),
        "count": tf.reduce_sum(weights),
    }
    if num_classes is not None:
        predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        sums["confusion"] = tf.math.confusion_matrix(
            labels, predicted, num_classes=num_classes, weights=weights, dtype=tf.float32
        )
    return sums


def means(totals: dict) -> dict[str, float]:
    """`top1`, `top5` and `loss` divided by `count` (kept), from `batch_sums` added up.

    Raises:
        ValueError: no example was counted.
    """
    count = float(totals["count"])
    if not count:
        raise ValueError("the evaluation dataset is empty: no example was counted")
    out = {k: float(totals[k]) / count for k in ("top1", "top5", "loss")}
    out["count"] = count
    return out
