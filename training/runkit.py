"""The run kit: what every driver does around its training loop.

The `fit` driver (`training.train`), the multi-worker loop (`training.multiworker`) and the
tuner's trials (`training.tuning`) are thin loops over the same pieces:

- `training.config.TrainConfig`: the run's configuration;
- `start_run`: seed, op determinism and the dtype policy;
- `load_data`: the pipelines the config names;
- `training.model_setup`: model, losses, loss weights, optimizer, compile;
- `precise_batch_norm`: exact batch-norm statistics before every validation;
- `DivergenceGuard`, `check_finite`: the divergence error, naming the epoch and step;
- `training.workdir`: one configuration check, resume messages, the epoch timer, the
  saved models and metrics.json.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

from training import data as data_lib
from training import machine
from training.batchnorm import PreciseBatchNorm, PreciseBatchNormCallback, num_batches_for
from training.config import TrainConfig
from training.placement import mixed_precision_policy


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def start_run(config: TrainConfig, *, verbose: bool = True) -> str:
    """Prints the machine line (`training.machine`), seeds Python, NumPy and TensorFlow,
    turns on op determinism when asked, and sets the dtype policy; returns the policy's
    name. Call it after the strategy is made."""
    if verbose:
        print(machine.describe(machine.info()))
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = mixed_precision_policy() if config.mixed_precision else "float32"
    keras.config.set_dtype_policy(policy)
    note = machine.bfloat16_note(machine.info(), policy) if verbose else None
    if note:
        print(note)
    return policy


def load_data(config: TrainConfig, strategy: tf.distribute.Strategy | None) -> data_lib.Datasets:
    """The train/validation/test pipelines that `config` names."""
    return data_lib.load_datasets(config.data_config(), strategy=strategy)


def divergence_message(value: float, epoch: int, step: int | None = None) -> str:
    """The TrainingDiverged message: the value, the epoch (from 1) and the step of that
    epoch (from 1) where the loss stopped being finite.

    Example:
    >>> divergence_message(float("nan"), epoch=2, step=7).split(".")[0]
    'training stopped: the loss became nan in epoch 2, step 7'
    """
    where = f"epoch {epoch}" + ("" if step is None else f", step {step}")
    return (
        f"training stopped: the loss became {value} in {where}. "
        "Lower --learning-rate, add --warmup-epochs, or check the data."
    )


def check_finite(losses: Sequence[float], first_epoch: int = 1) -> None:
    """Raises TrainingDiverged when a loss of the epochs from `first_epoch` on is NaN or
    infinite."""
    for epoch, value in enumerate(losses, start=first_epoch):
        if not math.isfinite(value):
            raise TrainingDiverged(divergence_message(value, epoch))


class DivergenceGuard(keras.callbacks.Callback):
    """Raises TrainingDiverged at the first training step whose loss is NaN or infinite,
    naming the epoch and the step (Keras's `TerminateOnNaN` only stops `fit`, after which
    the epoch's NaN weights would still be checkpointed)."""

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = float(keras.ops.convert_to_numpy(loss))
        if not math.isfinite(value):
            raise TrainingDiverged(divergence_message(value, self.epoch + 1, batch + 1))


def precise_batch_norm(
    model: keras.Model, config: TrainConfig, train: tf.data.Dataset, num_train: int
) -> PreciseBatchNormCallback | None:
    """The callback that re-estimates the BN statistics over batches of `train` (of
    `num_train` examples) before every validation, or None when
    `config.precise_bn_images` is 0 or the model has no batch norm."""
    if not config.precise_bn_images:
        return None
    estimator = PreciseBatchNorm(model)
    if not estimator.layers:
        return None
    batches = num_batches_for(config.precise_bn_images, config.batch_size, num_train)
    return PreciseBatchNormCallback(estimator, train, batches)


def precise_bn_metrics(callback: PreciseBatchNormCallback | None) -> dict:
    """What metrics.json records of the precise-BN updates made by this process."""
    if callback is None:
        return {"precise_bn_images": 0}
    seconds = callback.estimator.seconds
    return {
        "precise_bn_images": callback.estimator.images,
        "precise_bn_batches": callback.num_batches,
        "precise_bn_seconds": seconds,
    }
