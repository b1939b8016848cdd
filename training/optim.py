"""Optimizer construction: one factory per recipe, and `make_optimizer`, which builds a
preset's optimizer for a run and applies the speed patches of `training.keras_patches`.

A factory takes the run's peak learning rate and shape and returns a Keras optimizer
with its schedule; each `training.presets.Preset` names its factory. The patched
optimizer serializes as Keras's own, so a `.keras` file needs no `training` to load.

Example:
>>> optimizer = sgd_paper(0.01, steps_per_epoch=10, epochs=20, warmup_epochs=0.0)
>>> float(optimizer.learning_rate.numpy())  # step 0
0.01
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import keras

from training.keras_patches import decay_with_one_learning_rate, fuse_adam_update

if TYPE_CHECKING:
    from training.presets import Preset

schedules = keras.optimizers.schedules


class OptimizerFactory(Protocol):
    """`(base learning rate, *, steps_per_epoch, epochs, warmup_epochs) -> optimizer`."""

    def __call__(
        self, base: float, *, steps_per_epoch: int, epochs: int, warmup_epochs: float
    ) -> keras.optimizers.Optimizer: ...


def sgd_paper(
    base: float, *, steps_per_epoch: int, epochs: int, warmup_epochs: float
) -> keras.optimizers.Optimizer:
    """GoogLeNet's: SGD momentum 0.9, the rate -4% every 8 epochs (stairs), Polyak averaging
    of the weights (EMA 0.999), weight decay 2e-4. No warmup."""
    schedule = schedules.ExponentialDecay(base, 8 * steps_per_epoch, 0.96, staircase=True)
    return keras.optimizers.SGD(
        schedule, momentum=0.9, weight_decay=2e-4, use_ema=True, ema_momentum=0.999
    )


def rmsprop_paper(
    base: float, *, steps_per_epoch: int, epochs: int, warmup_epochs: float
) -> keras.optimizers.Optimizer:
    """Inception-v3's: RMSProp (rho 0.9, momentum 0.9, epsilon 1.0), the rate x0.94 every
    2 epochs (stairs), gradient clipping at global norm 2.0, weight decay 4e-5. No warmup."""
    schedule = schedules.ExponentialDecay(base, 2 * steps_per_epoch, 0.94, staircase=True)
    return keras.optimizers.RMSprop(
        schedule, rho=0.9, momentum=0.9, epsilon=1.0, global_clipnorm=2.0, weight_decay=4e-5
    )


def adamw_cosine(
    base: float, *, steps_per_epoch: int, epochs: int, warmup_epochs: float
) -> keras.optimizers.Optimizer:
    """AdamW (weight decay 0.05) with a linear warmup over `warmup_epochs`, then cosine
    decay to 0 at the last step of the run (`warmup_cosine`)."""
    schedule = warmup_cosine(
        base, steps_per_epoch=steps_per_epoch, epochs=epochs, warmup_epochs=warmup_epochs
    )
    return keras.optimizers.AdamW(schedule, weight_decay=0.05)


def sgd_finetune(
    base: float, *, steps_per_epoch: int, epochs: int, warmup_epochs: float
) -> keras.optimizers.Optimizer:
    """Fine-tuning's: SGD with Nesterov momentum 0.9, weight decay 1e-4, the same warmup
    and cosine decay as `adamw_cosine` (the `finetune` preset: `training.presets`)."""
    schedule = warmup_cosine(
        base, steps_per_epoch=steps_per_epoch, epochs=epochs, warmup_epochs=warmup_epochs
    )
    return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, weight_decay=1e-4)


def warmup_cosine(
    base: float, *, steps_per_epoch: int, epochs: int, warmup_epochs: float
) -> schedules.LearningRateSchedule:
    """A linear warmup over `warmup_epochs`, then cosine decay to 0 at the last step.

    Step k of the warmup trains at `base * (k + 1) / warmup_steps`: the last warmup step is
    the first at `base` (Keras's warmup reaches its target one step after its end).
    """
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    total_steps = max(steps_per_epoch * epochs, 1)
    if warmup_steps > 1:
        return schedules.CosineDecay(
            base / warmup_steps,
            decay_steps=max(total_steps - warmup_steps + 1, 1),
            warmup_target=base,
            warmup_steps=warmup_steps - 1,
        )
    return schedules.CosineDecay(base, decay_steps=total_steps)


def scaled_learning_rate(preset: Preset, global_batch_size: int) -> float:
    """The preset's learning rate scaled linearly to `global_batch_size`."""
    return preset.learning_rate * global_batch_size / preset.reference_batch


def check_warmup(preset: Preset, warmup_epochs: float | None) -> None:
    """Raises ValueError for a warmup that the preset's schedule cannot give."""
    if warmup_epochs is None:
        return
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0; received {warmup_epochs!r}")
    if warmup_epochs and not preset.warmup:
        raise ValueError(
            f"the {preset.name} preset decays in stairs from the first step and has no warmup; "
            f"received warmup_epochs={warmup_epochs!r}. Warm up with the default preset "
            "(cosine decay), or pass 0."
        )


def make_optimizer(
    preset: Preset,
    *,
    steps_per_epoch: int,
    epochs: int,
    global_batch_size: int,
    learning_rate: float | None = None,
    warmup_epochs: float | None = None,
    ema_momentum: float | None = None,
) -> keras.optimizers.Optimizer:
    """The preset's optimizer and schedule for a run of `epochs` x `steps_per_epoch`.

    Args:
        preset: Preset. The recipe; its `optimizer` factory builds the optimizer.
        steps_per_epoch: int. Optimizer steps per epoch.
        epochs: int. Epochs of the run.
        global_batch_size: int. The batch the preset's learning rate is scaled to.
        learning_rate: float or None. Overrides the scaled learning rate.
        warmup_epochs: float or None. Overrides the preset's warmup.
        ema_momentum: float or None. Overrides the preset's moving average of the weights
            (Keras's `use_ema`/`ema_momentum`; 0 turns it off). Keras's `fit` puts the
            average in the model's weights when it ends (`finalize_variable_values`).

    Raises:
        ValueError: a warmup the preset cannot give.
    """
    check_warmup(preset, warmup_epochs)
    optimizer = preset.optimizer(
        learning_rate or scaled_learning_rate(preset, global_batch_size),
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        warmup_epochs=preset.warmup_epochs if warmup_epochs is None else warmup_epochs,
    )
    if ema_momentum is not None:  # before the optimizer is built: build makes the averages
        if not 0 <= ema_momentum < 1:
            raise ValueError(f"ema_momentum must be in [0, 1); received {ema_momentum!r}")
        optimizer.use_ema = ema_momentum > 0
        optimizer.ema_momentum = ema_momentum
    return fuse_adam_update(decay_with_one_learning_rate(optimizer))
