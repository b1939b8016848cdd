"""Precise batch-norm statistics: every BN layer's population mean and variance,
re-estimated with the current weights over a number of training batches.

Why: BatchNormalization keeps an exponential moving average of batch statistics
(momentum 0.99: a horizon of about 100 steps). On a small dataset, where an epoch is 20
steps, that average still describes the weights of several epochs ago, and the model in
inference mode can predict one class for every image while it trains at 98% accuracy.
Re-estimating the statistics before each validation and before the final test and export
removes that lag (PreciseBN: Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; fvcore
`update_bn_stats`).

How: a model sharing the trained layers returns the input of every BN layer; it runs in
training mode, so that each BN layer sees what it sees in training (the layers before it
normalize with batch statistics). Each replica reduces its share of a batch to a count, a
mean and a sum of squared deviations per channel; `strategy.gather` brings every
replica's numbers of the cluster to every worker, where they are combined exactly (Chan
et al.'s parallel formula, in float64). So the statistics are those of all the images
seen, not an average of per-batch values, and every worker assigns the same values.

A frozen BN layer (`trainable=False`, e.g. the loaded layers of a `--freeze-base-epochs`
phase) runs in inference mode and keeps its statistics: it is never re-estimated, and the
layers after it see what they see in training, its moving statistics applied.

Examples:

```python
estimator = PreciseBatchNorm(model)
seconds = estimator.update(train_dataset, num_batches=32)  # before model.evaluate(...)
```
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import tensorflow as tf

# Images over which the statistics are estimated by default (`TrainConfig.precise_bn_images`).
DEFAULT_IMAGES = 4096


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of `model`, nested models included, in order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(batch_norm_layers(layer))
    return found


def num_batches_for(images: int, batch_size: int, num_examples: int) -> int:
    """Batches of `batch_size` that cover `images` images, at most one pass over the
    `num_examples` examples of the data."""
    return max(1, math.ceil(min(images, num_examples) / batch_size))


class PreciseBatchNorm:
    """Re-estimates `model`'s BN moving statistics; see the module docstring.

    Args:
        model: keras.Model. A functional model (our builders' models) with BN layers; the
            estimator shares its layers. Build it under the strategy it trains with.
        strategy: tf.distribute.Strategy or None. Defaults to the model's.
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy | None = None):
        self.layers = batch_norm_layers(model)
        self.strategy = strategy or model.distribute_strategy
        self.seconds: list[float] = []  # the duration of every update
        self.images = 0  # images of the last update
        if not self.layers:
            return
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        self._features = keras.Model(inputs, [layer.input for layer in self.layers])
        self._channels = [int(layer.input.shape[-1]) for layer in self.layers]
        self._step = tf.function(self._replica_step, reduce_retracing=True)

    def _replica_step(self, batch):
        def moments(images):
            outputs = self._features(images, training=True)
            parts = [tf.cast(tf.shape(images)[:1], tf.float32)]
            for x in outputs:
                x = tf.cast(x, tf.float32)
                axes = list(range(len(x.shape) - 1))
                count = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
                mean, variance = tf.nn.moments(x, axes)
                # An empty share (which `update` avoids) would give count 0, ignored when combined.
                parts += [tf.reshape(count, [1]), mean, variance * count]
            return tf.expand_dims(tf.concat(parts, 0), 0)

        per_replica = self.strategy.run(moments, args=(batch,))
        return self.strategy.gather(per_replica, axis=0)

    def update(self, dataset: tf.data.Dataset, num_batches: int) -> float:
        """Assigns every BN layer the mean and (biased, as Keras's) variance of its inputs
        over the first `num_batches` batches of `dataset` (`images` or `(images, ...)`
        batches; its own random order and augmentation). Returns the seconds it took.

        Frozen layers (`trainable=False`) keep their statistics; with every layer frozen
        nothing runs. Must be called by every worker of a multi-worker cluster (it is a
        collective).
        """
        start = time.perf_counter()
        if not any(layer.trainable for layer in self.layers):
            return 0.0
        # Each batch cut to a multiple of the replicas, so that no replica gets an empty
        # share: with oneDNN a convolution over an empty batch fails. The few examples
        # cut (fewer than the replicas, per batch) are not counted in `images`.
        replicas = self.strategy.num_replicas_in_sync
        images = (
            dataset.take(num_batches)
            .map(lambda x, *_: x[: tf.shape(x)[0] // replicas * replicas])
            .filter(lambda x: tf.shape(x)[0] > 0)
        )
        totals = None  # per layer: (count, mean, M2), float64
        seen = 0
        for batch in self.strategy.experimental_distribute_dataset(images):
            rows = np.asarray(self._step(batch), np.float64)
            for row in rows:
                seen += int(row[0])
                totals = _combine(totals, self._split(row[1:]))
        if totals is None or any(count == 0 for count, _, _ in totals):
            raise ValueError(
                f"precise batch norm saw no images in {num_batches} batch(es) of the dataset"
            )
        for layer, (count, mean, m2) in zip(self.layers, totals, strict=True):
            if not layer.trainable:  # frozen: inference mode, its statistics kept
                continue
            layer.moving_mean.assign(mean.astype("float32"))
            layer.moving_variance.assign((m2 / count).astype("float32"))
        self.images = seen
        self.seconds.append(time.perf_counter() - start)
        return self.seconds[-1]

    def _split(self, row: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
        out, offset = [], 0
        for channels in self._channels:
            count = row[offset]
            mean = row[offset + 1 : offset + 1 + channels]
            m2 = row[offset + 1 + channels : offset + 1 + 2 * channels]
            out.append((count, mean, m2))
            offset += 1 + 2 * channels
        return out


def _combine(totals, part):
    """Chan et al.'s pairwise update of (count, mean, M2), layer by layer."""
    if totals is None:
        totals = [(0.0, np.zeros_like(mean), np.zeros_like(m2)) for _, mean, m2 in part]
    combined = []
    for (n_a, mean_a, m2_a), (n_b, mean_b, m2_b) in zip(totals, part, strict=True):
        if n_b == 0:
            combined.append((n_a, mean_a, m2_a))
            continue
        n = n_a + n_b
        delta = mean_b - mean_a
        combined.append((n, mean_a + delta * (n_b / n), m2_a + m2_b + delta**2 * (n_a * n_b / n)))
    return combined


class PreciseBatchNormCallback(keras.callbacks.Callback):
    """Re-estimates the BN statistics before every validation of `fit` (so validation,
    `ModelCheckpoint` and the backups see them), over `num_batches` batches of `dataset`.

    `estimated_at` is the optimizer step of the last estimate: after `fit`, the statistics
    are current unless the weights changed since (e.g. an EMA of the weights was
    written into them at the end of training).
    """

    def __init__(self, estimator: PreciseBatchNorm, dataset: tf.data.Dataset, num_batches: int):
        super().__init__()
        self.estimator = estimator
        self.dataset = dataset
        self.num_batches = num_batches
        self.estimated_at: int | None = None

    def on_test_begin(self, logs=None):
        self.estimator.update(self.dataset, self.num_batches)
        self.estimated_at = _step(self.model.optimizer)

    def current(self) -> bool:
        """Whether the statistics were estimated with the model's current weights."""
        optimizer = self.model.optimizer
        return self.estimated_at == _step(optimizer) and not optimizer.use_ema


def _step(optimizer: keras.optimizers.Optimizer) -> int:
    return int(keras.ops.convert_to_numpy(optimizer.iterations))
