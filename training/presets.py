"""Optimizer recipes as named presets, each with an optional linear warmup.

- `googlenet_paper`: SGD momentum 0.9, learning rate -4% every 8 epochs, Polyak averaging
  of the weights (Keras EMA), as in "Going deeper with convolutions", section 6.
- `inception_v3_paper`: RMSProp (rho 0.9, momentum 0.9, epsilon 1.0), learning rate 0.045
  decayed x0.94 every 2 epochs, gradient clipping at global norm 2.0, label smoothing 0.1
  ("Rethinking the Inception Architecture", section 8).
- `default`: a short schedule for small data: AdamW with cosine decay and warmup.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_inception_training")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 over `warmup_steps`, then `schedule(step - warmup_steps)`."""

    def __init__(self, schedule, warmup_steps: int):
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.cast(self.warmup_steps, "float32")
        after = self.schedule(ops.maximum(step - warmup, 0.0))
        if self.warmup_steps == 0:
            return after
        return ops.where(step < warmup, after * (step + 1.0) / warmup, after)

    def get_config(self):
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "warmup_steps": self.warmup_steps,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.optimizers.schedules.deserialize(config["schedule"])
        return cls(**config)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named recipe. `learning_rate` is for `reference_batch`; it scales linearly."""

    name: str
    learning_rate: float
    reference_batch: int
    label_smoothing: float
    warmup_epochs: float
    description: str


PRESETS = {
    "default": Preset("default", 2e-3, 128, 0.1, 1.0, "AdamW, cosine decay, 1 warmup epoch"),
    "googlenet_paper": Preset(
        "googlenet_paper", 0.01, 32, 0.0, 0.0, "SGD momentum 0.9, -4% every 8 epochs, EMA"
    ),
    "inception_v3_paper": Preset(
        "inception_v3_paper", 0.045, 32, 0.1, 0.0, "RMSProp, x0.94 every 2 epochs, clipnorm 2"
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available presets: {sorted(PRESETS)}")
    return PRESETS[name]


def make_optimizer(
    preset: Preset,
    *,
    steps_per_epoch: int,
    epochs: int,
    global_batch_size: int,
    learning_rate: float | None = None,
    warmup_epochs: float | None = None,
) -> keras.optimizers.Optimizer:
    """The preset's optimizer and schedule for a run of `epochs` x `steps_per_epoch`."""
    base = learning_rate or preset.learning_rate * global_batch_size / preset.reference_batch
    warmup_epochs = preset.warmup_epochs if warmup_epochs is None else warmup_epochs
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    total = max(steps_per_epoch * epochs - warmup_steps, 1)
    schedules = keras.optimizers.schedules
    if preset.name == "googlenet_paper":
        schedule = schedules.ExponentialDecay(base, 8 * steps_per_epoch, 0.96, staircase=True)
        return keras.optimizers.SGD(
            LinearWarmup(schedule, warmup_steps),
            momentum=0.9,
            weight_decay=2e-4,
            use_ema=True,
            ema_momentum=0.999,
        )
    if preset.name == "inception_v3_paper":
        schedule = schedules.ExponentialDecay(base, 2 * steps_per_epoch, 0.94, staircase=True)
        return keras.optimizers.RMSprop(
            LinearWarmup(schedule, warmup_steps),
            rho=0.9,
            momentum=0.9,
            epsilon=1.0,
            global_clipnorm=2.0,
            weight_decay=4e-5,
        )
    schedule = schedules.CosineDecay(base, decay_steps=total, alpha=0.0)
    return keras.optimizers.AdamW(LinearWarmup(schedule, warmup_steps), weight_decay=0.05)
