"""Model, loss and optimizer set-up shared by every driver (`fit`, the multi-worker loop,
the tuner's trials).

The model's outputs decide the targets: a model with auxiliary heads has dict outputs
(`{"main", "aux1", "aux2"}`), each label fans out to every head, and the heads' loss
weights are `keras_inception.default_loss_weights(model)` unless the config overrides them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import tensorflow as tf

import keras_inception as ki
from training.config import TrainConfig
from training.keras_patches import tolerate_uneven_batches
from training.losses import SparseCrossentropyWithSmoothing
from training.optim import make_optimizer, scaled_learning_rate
from training.presets import get_preset
from training.replicas import logical_cpu_replicas


def output_names_of(model) -> list[str] | None:
    """The output names of a dict-output model (e.g. ``["main", "aux1", "aux2"]``), else None."""
    outputs = model.output
    return list(outputs.keys()) if isinstance(outputs, dict) else None


def with_targets(ds: tf.data.Dataset, output_names: Sequence[str] | None) -> tf.data.Dataset:
    """Fans each label (and sample weight, when the elements carry one) out to
    ``{name: label}`` for a multi-output model (None: unchanged)."""
    if not output_names:
        return ds
    names = list(output_names)

    def fan_out(x, y, *weight):
        return (x, {name: y for name in names}, *({name: w for name in names} for w in weight))

    return ds.map(fan_out, num_parallel_calls=tf.data.AUTOTUNE)


def monitor_name(model: keras.Model) -> str:
    """The validation top-1 that `fit` logs for this model, what checkpoints and the tuner
    maximize: `val_main_accuracy` for a model with auxiliary heads (dict outputs), else
    `val_accuracy`. (`training.tuning.objective_name` is this function.)"""
    return "val_main_accuracy" if output_names_of(model) else "val_accuracy"


def build_model(
    config: TrainConfig,
    image_shape: tuple[int, int, int],
    num_classes: int,
    *,
    include_preprocessing: str | None = "inception",
    **overrides,
) -> keras.Model:
    """The registered model for `config` and the data; `overrides` go to the builder.

    The model takes the pipeline's raw pixels in [0, 255] and normalizes them itself:
    `include_preprocessing` is "inception" (`x / 127.5 - 1`) by default, "torch" for
    torchvision's weights (see `keras_inception.build_googlenet`).

    The stem defaults to "small" for images of 64 px or less. With `config.specs`, the
    width table read from that file is built as it is (its widths are final: width
    multiplier 1, no minimum depth). Call it inside the strategy's scope.

    Raises:
        FileNotFoundError, ValueError: a missing or bad specs file, or one for another
            model; an input shape the model cannot take.
    """
    kwargs = dict(
        input_shape=image_shape,
        classes=num_classes,
        aux_logits=config.aux,
        stem=config.stem or ("small" if image_shape[0] <= 64 else "imagenet"),
        width_multiplier=config.width_multiplier,
        min_depth=config.min_depth,
        bottleneck_ratio=config.bottleneck_ratio,
        bn_momentum=config.bn_momentum,
        include_preprocessing=include_preprocessing,
    )
    if config.specs is not None:
        kwargs["specs"] = ki.load_specs(config.specs)
    if config.dropout is not None:
        kwargs["dropout"] = config.dropout
    if config.sync_batch_norm:
        kwargs["sync_batch_norm"] = True
    if not config.fused_batch_norm:
        kwargs["fused_batch_norm"] = False
    kwargs.update(overrides)
    return ki.get_model(config.model, **kwargs)


def aux_loss_weight_of(model: keras.Model, config: TrainConfig) -> float | None:
    """The auxiliary heads' loss weight: the config's, else the model's own
    (`keras_inception.default_loss_weights`: 0.3 for GoogLeNet, 0.4 for V2/V3); None for a
    model without auxiliary heads."""
    if output_names_of(model) is None:
        return None
    if config.aux_loss_weight is not None:
        return config.aux_loss_weight
    weights = [w for k, w in ki.default_loss_weights(model).items() if k != "main"]
    return weights[0] if weights else None


def make_losses(
    model: keras.Model, config: TrainConfig, *, aux_loss_weight: float | None = None
) -> tuple[SparseCrossentropyWithSmoothing, dict[str, float] | None]:
    """The smoothed sparse loss and the per-output loss weights (None: one output).

    `aux_loss_weight` overrides the config's (a tuner's choice).
    """
    preset = get_preset(config.preset)
    label_smoothing = (
        preset.label_smoothing if config.label_smoothing is None else config.label_smoothing
    )
    loss = SparseCrossentropyWithSmoothing(label_smoothing)
    if output_names_of(model) is None:
        return loss, None
    aux_loss_weight = config.aux_loss_weight if aux_loss_weight is None else aux_loss_weight
    loss_weights = ki.default_loss_weights(model)
    if aux_loss_weight is not None:
        loss_weights = {k: 1.0 if k == "main" else aux_loss_weight for k in loss_weights}
    return loss, loss_weights


def run_learning_rate(config: TrainConfig) -> float:
    """The peak learning rate of the run: the config's, else the preset's scaled to the
    batch size."""
    if config.learning_rate:
        return config.learning_rate
    return scaled_learning_rate(get_preset(config.preset), config.batch_size)


def make_run_optimizer(
    config: TrainConfig, *, num_train: int, learning_rate: float | None = None
) -> keras.optimizers.Optimizer:
    """The preset's optimizer and schedule for this run's steps (`learning_rate` overrides)."""
    return make_optimizer(
        get_preset(config.preset),
        steps_per_epoch=math.ceil(num_train / config.batch_size),
        epochs=config.epochs,
        global_batch_size=config.batch_size,
        learning_rate=learning_rate or run_learning_rate(config),
        warmup_epochs=config.warmup_epochs,
        ema_momentum=config.ema_momentum,
    )


def jit_compile_setting() -> bool | str:
    """`compile(jit_compile=...)` for the current strategy: off on logical CPUs under
    MirroredStrategy (XLA fails there), else Keras's "auto" (XLA where Keras turns it on)."""
    return False if logical_cpu_replicas(tf.distribute.get_strategy()) else "auto"


def compile_model(
    model: keras.Model,
    config: TrainConfig,
    *,
    num_train: int,
    learning_rate: float | None = None,
    aux_loss_weight: float | None = None,
) -> None:
    """Per-output smoothed losses, auxiliary loss weights, top-1/top-5 on the main head.

    `learning_rate` and `aux_loss_weight` override the config's (a tuner's choices).
    Call it inside the strategy's scope.
    """
    output_names = output_names_of(model)
    loss, loss_weights = make_losses(model, config, aux_loss_weight=aux_loss_weight)
    metrics = [
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
    ]
    model.compile(
        optimizer=make_run_optimizer(config, num_train=num_train, learning_rate=learning_rate),
        loss={k: loss for k in output_names} if output_names else loss,
        loss_weights=loss_weights,
        metrics={"main": metrics} if output_names else metrics,
        jit_compile=jit_compile_setting(),
    )
    tolerate_uneven_batches(model)
