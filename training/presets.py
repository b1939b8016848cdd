"""Optimizer recipes as named presets.

- `googlenet_paper`: SGD momentum 0.9, learning rate -4% every 8 epochs, Polyak averaging
  of the weights (Keras EMA), as in "Going deeper with convolutions", section 6.
- `inception_v3_paper`: RMSProp (rho 0.9, momentum 0.9, epsilon 1.0), learning rate 0.045
  decayed x0.94 every 2 epochs, gradient clipping at global norm 2.0, label smoothing 0.1
  ("Rethinking the Inception Architecture", section 8).
- `default`: a short schedule for small data: AdamW with cosine decay after a linear
  warmup (`keras.optimizers.schedules.CosineDecay(warmup_target=, warmup_steps=)`).

The paper presets decay in stairs from the first step, as the papers do; Keras's schedules
give them no warmup, so `warmup_epochs` other than 0 is refused for them.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf


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


def scaled_learning_rate(preset: Preset, global_batch_size: int) -> float:
    """The preset's learning rate scaled linearly to `global_batch_size`."""
    return preset.learning_rate * global_batch_size / preset.reference_batch


def check_warmup(preset: Preset, warmup_epochs: float | None) -> None:
    """Raises ValueError for a warmup that the preset's schedule cannot give."""
    if warmup_epochs is None:
        return
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0; received {warmup_epochs!r}")
    if warmup_epochs and preset.name != "default":
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
) -> keras.optimizers.Optimizer:
    """The preset's optimizer and schedule for a run of `epochs` x `steps_per_epoch`."""
    check_warmup(preset, warmup_epochs)
    optimizer = _preset_optimizer(
        preset, steps_per_epoch, epochs, global_batch_size, learning_rate, warmup_epochs
    )
    return fuse_adam_update(decay_with_one_learning_rate(optimizer))


def _preset_optimizer(
    preset, steps_per_epoch, epochs, global_batch_size, learning_rate, warmup_epochs
):
    base = learning_rate or scaled_learning_rate(preset, global_batch_size)
    schedules = keras.optimizers.schedules
    if preset.name == "googlenet_paper":
        schedule = schedules.ExponentialDecay(base, 8 * steps_per_epoch, 0.96, staircase=True)
        return keras.optimizers.SGD(
            schedule, momentum=0.9, weight_decay=2e-4, use_ema=True, ema_momentum=0.999
        )
    if preset.name == "inception_v3_paper":
        schedule = schedules.ExponentialDecay(base, 2 * steps_per_epoch, 0.94, staircase=True)
        return keras.optimizers.RMSprop(
            schedule,
            rho=0.9,
            momentum=0.9,
            epsilon=1.0,
            global_clipnorm=2.0,
            weight_decay=4e-5,
        )
    warmup_epochs = preset.warmup_epochs if warmup_epochs is None else warmup_epochs
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    total_steps = max(steps_per_epoch * epochs, 1)
    if warmup_steps > 1:
        # Step k of the warmup trains at base * (k + 1) / warmup_steps: the last warmup step
        # is the first at `base` (Keras's warmup reaches its target one step after its end),
        # then cosine decay reaches 0 at the last step of the run.
        schedule = schedules.CosineDecay(
            base / warmup_steps,
            decay_steps=max(total_steps - warmup_steps + 1, 1),
            warmup_target=base,
            warmup_steps=warmup_steps - 1,
        )
    else:
        schedule = schedules.CosineDecay(base, decay_steps=total_steps)
    return keras.optimizers.AdamW(schedule, weight_decay=0.05)


def decay_with_one_learning_rate(
    optimizer: keras.optimizers.Optimizer,
) -> keras.optimizers.Optimizer:
    """Makes `optimizer`'s weight decay read the learning rate once a step; returns it.

    Keras's TensorFlow optimizers evaluate the learning-rate schedule once for every
    decayed variable (for CosineDecay with warmup, a `tf.cond` each): 187 copies in a
    GoogLeNet's training step, which took 28 s of the 200 s that a 3-epoch test run spent,
    mostly tracing them. Here the schedule is evaluated once, before the decay of every
    variable; the decay is Keras's (`variable -= variable * weight_decay * learning_rate`,
    in the variable's dtype), so the weights are the same to the bit. Only this instance
    changes: it serializes as Keras's own optimizer, and a `.keras` file needs no
    `training` to load.
    """
    if optimizer.weight_decay is None:
        return optimizer

    def apply_weight_decay(variables):
        def decay_all(distribution, variables, **kwargs):
            learning_rate = optimizer.learning_rate  # once, for every variable below

            def decay(variable):
                if optimizer._use_weight_decay(variable):
                    lr = tf.cast(learning_rate, variable.dtype)
                    wd = tf.cast(optimizer.weight_decay, variable.dtype)
                    variable.assign_sub(variable * wd * lr)

            for variable in variables:
                if isinstance(variable, keras.Variable):
                    variable = variable.value  # the tf.Variable
                distribution.extended.update(variable, decay, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(
            decay_all, optimizer._distribution_strategy, variables
        )

    optimizer._apply_weight_decay = apply_weight_decay
    return optimizer


# Dtypes that TensorFlow's ResourceApplyAdam kernel takes (CPU, GPU and XLA).
_FUSED_ADAM_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def fuse_adam_update(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Makes `optimizer`'s Adam update one fused kernel per variable; returns it.

    Keras 3's Adam (and AdamW) updates each variable with about a dozen small ops (the
    moments, the bias correction, the step), traced once per variable: for a 1/4-width
    GoogLeNet's 180 variables that is over 2,000 ops in the training step, which TensorFlow
    traces, optimizes and runs one by one. Here each update is TensorFlow's
    `ResourceApplyAdam`, the kernel tf.keras 2 used, which computes Keras's formula
    (`m += (g - m)(1 - beta_1)`, `v += (g^2 - v)(1 - beta_2)`,
    `var -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon)`) in one pass.
    AMSGrad, sparse gradients and other dtypes keep Keras's update. Only this instance
    changes: it serializes as Keras's own optimizer, and a `.keras` file needs no `training`
    to load. Other optimizers are returned as they are.
    """
    if type(optimizer) not in (keras.optimizers.Adam, keras.optimizers.AdamW):
        return optimizer
    if optimizer.amsgrad:
        return optimizer
    keras_update = optimizer.update_step

    def update_step(gradient, variable, learning_rate):
        if isinstance(variable, keras.Variable):
            variable = variable.value  # the tf.Variable
        dtype = variable.dtype
        if isinstance(gradient, tf.IndexedSlices) or dtype not in _FUSED_ADAM_DTYPES:
            return keras_update(gradient, variable, learning_rate)
        index = optimizer._get_variable_index(variable)
        m = optimizer._momentums[index].value
        v = optimizer._velocities[index].value
        step = tf.cast(optimizer.iterations + 1, dtype)
        beta_1 = tf.cast(optimizer.beta_1, dtype)
        beta_2 = tf.cast(optimizer.beta_2, dtype)
        # In a strategy's update call every `.handle` is this device's copy.
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=m.handle,
            v=v.handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(optimizer.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )

    optimizer.update_step = update_step
    return optimizer
