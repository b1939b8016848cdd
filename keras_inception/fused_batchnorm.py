"""FusedBatchNormalization: Keras's BatchNormalization on TensorFlow's fused kernel.

Keras 3's `BatchNormalization` on TensorFlow is a chain of small ops (mean, squared
difference, rsqrt, multiply, add, and as many again in the backward pass); tf.keras 2
ran one `FusedBatchNormV3` kernel instead, forward and backward, and TensorFlow's own
benchmarks measured it at 1.29x on InceptionV3 training (issue 13). This layer is that
kernel behind Keras 3's layer: same constructor, same weights under the same names in the
same order (`gamma`, `beta`, `moving_mean`, `moving_variance`, as `scale` / `center`
allow), same `get_config`, so `.keras` files, `.weights.h5` files and keras.applications
InceptionV3 weights load into either. (For that, its `__name__` is Keras's, which Keras
files key weights by; see the note after the class.)

Files are plain Keras: the fused kernel is a runtime choice, not part of the model. A
`.keras` file (and `get_config`, `to_json`) records this layer as Keras's own,
`{"module": "keras.layers", "class_name": "BatchNormalization", "registered_name": None}`,
with Keras's config and weights, so `keras.saving.load_model` reads it where only Keras
is installed (`safe_mode=True`) and gives `keras.layers.BatchNormalization` layers, with
the same numbers. `load_model` (this module) loads a file and puts the fused layer back.
Keras names a layer in a file after its class, and only a private Keras API changes that
name: `keras_inception.keras_private.serialize_as`, checked on import (it warns and
leaves Keras alone if that API has changed; files then record the registered name
below). Files written before, which record `"registered_name":
"keras_inception>FusedBatchNormalization"`, still load wherever `keras_inception` is
imported: that name stays registered, for loading.

Its numbers are Keras's, up to float rounding (tests/test_fused_batchnorm.py):

* outputs: `gamma * (x - mean) / sqrt(var + epsilon) + beta` with the batch's mean and
  (biased) variance in training, the moving ones in inference;
* gradients with respect to the input, gamma and beta (the kernel's backward pass is the
  full batch-norm gradient, through the batch statistics);
* moving statistics `moving = moving * momentum + batch * (1 - momentum)`. The kernel
  returns the batch variance Bessel-corrected, `n / (n - 1)` times the biased variance
  over `n = batch * height * width` values; that factor is undone before the update, as
  Keras updates with the biased variance;
* mixed precision: Keras computes in float32 whatever the input (`result_type(x,
  float32)`) and returns the layer's compute dtype; the kernel takes float16 or
  bfloat16 inputs with float32 gamma, beta and statistics, computes in float32
  internally, and returns the input's dtype, which under a mixed policy is the compute
  dtype. The moving statistics are updated in float32 in both.

The fused kernel serves rank-4, channels-last (`axis=-1`) float16 / bfloat16 / float32
inputs on the TensorFlow backend, in training and in inference, with or without `scale`
and `center` (a constant one or zero stands in for a missing gamma or beta). Everything
else runs Keras's own `BatchNormalization.call`: the JAX and torch backends,
`synchronized=True` (statistics all-reduced across replicas), `renorm=True`, a mask,
another rank or axis, float64 (no such kernel), and `epsilon < 1.001e-5` (cuDNN's
minimum; tf.keras 2 refused it too). `uses_fused_kernel(inputs, mask)` says which.

TensorFlow is reached without an import statement, by `importlib` on first use and only
when Keras's backend is TensorFlow (which has then imported it already): the package
imports Keras (and NumPy) only and runs on JAX and torch without TensorFlow installed.

Examples:

```python
x = keras.layers.Conv2D(32, 3, use_bias=False)(inputs)
x = FusedBatchNormalization(epsilon=1e-3, scale=False, name="conv1_bn")(x)

# Swap every BatchNormalization of an existing model (same weights, same order):
fused = keras.models.clone_model(model, clone_function=fuse_batch_norm)
fused.set_weights(model.get_weights())

# A file records keras.layers.BatchNormalization; load it with the fused layer:
model.save("model.keras")
fused = load_model("model.keras")  # keras.saving.load_model's arguments, too
```
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import keras
from keras import layers, ops

from keras_inception import keras_private

# Input dtypes the kernel takes (its `T`; gamma, beta and statistics are float32, `U`).
FUSED_DTYPES = ("float16", "bfloat16", "float32")
# The smallest epsilon cuDNN accepts, plus a margin (tf.keras 2's `_fused_can_be_used`).
MIN_FUSED_EPSILON = 1.001e-5


def _tensorflow():
    """The `tensorflow` module. Called only on Keras's TensorFlow backend, which has
    imported it already; by name, so that the package has no TensorFlow import."""
    return importlib.import_module("tensorflow")


@keras.saving.register_keras_serializable(package="keras_inception", name="FusedBatchNormalization")
class FusedBatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's fused kernel.

    Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
    Internal Covariate Shift", 2015. A drop-in subclass: it takes the arguments of
    `keras.layers.BatchNormalization`, has its weights, and gives its numbers (see the
    module docstring for what runs where). Configs and `.keras` files record it as
    `keras.layers.BatchNormalization`; `load_model` restores it.

    Args:
        **kwargs: the arguments of `keras.layers.BatchNormalization` (`axis`,
            `momentum`, `epsilon`, `center`, `scale`, initializers, regularizers,
            constraints, `synchronized`, `renorm*`, and the base layer's `name`,
            `dtype`, ...).

    Examples:

    ```python
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, use_bias=False)(inputs)
    x = FusedBatchNormalization(momentum=0.9, name="conv_bn")(x)
    ```
    """

    def uses_fused_kernel(self, inputs, mask=None) -> bool:
        """Whether `call(inputs, mask=mask)` runs the fused kernel (else Keras's path)."""
        rank = len(inputs.shape)
        return (
            keras.backend.backend() == "tensorflow"
            and not self.synchronized
            and not self.renorm
            and mask is None
            and rank == 4
            and self.axis in (-1, rank - 1)
            and keras.backend.standardize_dtype(inputs.dtype) in FUSED_DTYPES
            and self.epsilon >= MIN_FUSED_EPSILON
        )

    def call(self, inputs, training=None, mask=None):
        if not self.uses_fused_kernel(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        tf = _tensorflow()
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        moving_mean = tf.cast(self.moving_mean, "float32")
        moving_variance = tf.cast(self.moving_variance, "float32")
        training = bool(training and self.trainable)
        empty = tf.zeros([0], "float32")  # training: no running statistics kept by the kernel
        outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=gamma,
            offset=beta,
            mean=empty if training else moving_mean,
            variance=empty if training else moving_variance,
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=training,
        )
        if training:
            # The kernel's variance is the biased one times n / max(n - 1, 1); Keras's
            # moving average takes the biased one.
            n = tf.cast(tf.reduce_prod(tf.shape(inputs, out_type="int64")[:-1]), "float32")
            variance = variance * (tf.maximum(n - 1.0, 1.0) / n)
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        return ops.cast(outputs, self.compute_dtype)

    def __repr__(self):
        return f"<FusedBatchNormalization name={self.name}, built={self.built}>"


# Keras 3 files (`.weights.h5`, and the weights inside `.keras`) key each layer's
# variables by its class's `__name__` in snake case and a count, not by the layer's name:
# `layers/batch_normalization_3/vars/0`. Under its own name this class's variables would
# be filed under `fused_batch_normalization_*`, and no file saved with Keras's layer would
# load into a model built with this one, nor back. Hence the Python class is named
# FusedBatchNormalization (`__qualname__`, imports, pickling, the registered name
# "keras_inception>FusedBatchNormalization" that older `.keras` files record and load by)
# while its `__name__`, which the weight files and `model.summary()` show, is Keras's.
FusedBatchNormalization.__name__ = "BatchNormalization"

# Configs and files record Keras's BatchNormalization (see the module docstring).
keras_private.serialize_as(FusedBatchNormalization, layers.BatchNormalization)


def fuse_batch_norm(layer: layers.Layer) -> layers.Layer:
    """`clone_model` clone function: a FusedBatchNormalization for every plain
    BatchNormalization (same config, so same name and weights), other layers cloned.

    Examples:

    ```python
    fused = keras.models.clone_model(model, clone_function=fuse_batch_norm)
    fused.set_weights(model.get_weights())
    ```
    """
    return _swap_batch_norm(FusedBatchNormalization)(layer)


def _swap_batch_norm(target: type) -> Callable[[layers.Layer], layers.Layer]:
    """`clone_model` clone function: a `target` for every BatchNormalization, fused or
    not (same config, so same name and weights); other layers cloned."""

    def clone(layer: layers.Layer) -> layers.Layer:
        if type(layer) in (layers.BatchNormalization, FusedBatchNormalization):
            return target.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    return clone


def _batch_norm_kinds(model: keras.Model) -> set[type]:
    """The classes of the BatchNormalization layers of `model`, nested models included."""
    kinds = set()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            kinds |= _batch_norm_kinds(layer)
        elif isinstance(layer, layers.BatchNormalization):
            kinds.add(type(layer))
    return kinds


def load_model(
    filepath: str | os.PathLike, *, fused_batch_norm: bool = True, **kwargs: Any
) -> keras.Model:
    """`keras.saving.load_model`, with every BatchNormalization a FusedBatchNormalization.

    A `.keras` file records Keras's BatchNormalization (see the module docstring), which
    `keras.saving.load_model` gives back; this function rebuilds the model with the fused
    layer (`clone_model`, nested Functional and Sequential models included) and the same
    weights. A compiled model stays compiled: the same compile config (optimizer, losses,
    metrics, loss weights) and the optimizer's state (step count, moments) copied, so
    training resumes where it stopped. A model with nothing to swap is returned as
    loaded.

    Args:
        filepath: str or path-like. A file `keras.saving.load_model` reads.
        fused_batch_norm: bool. True: `FusedBatchNormalization` layers (TensorFlow's
            fused kernel; Keras's computation on other backends). False:
            `keras.layers.BatchNormalization` layers, also for files written before
            files recorded Keras's layer. Defaults to True.
        **kwargs: `keras.saving.load_model`'s (`custom_objects`, `compile`,
            `safe_mode`); `custom_objects` also serve the recompilation.

    Returns:
        A `keras.Model`.

    Examples:

    ```python
    model = keras_inception.build_googlenet(classes=10)
    model.save("googlenet.keras")
    fused = load_model("googlenet.keras")  # FusedBatchNormalization layers
    plain = keras.saving.load_model("googlenet.keras")  # Keras's BatchNormalization
    ```
    """
    model = keras.saving.load_model(filepath, **kwargs)
    target = FusedBatchNormalization if fused_batch_norm else layers.BatchNormalization
    if not _batch_norm_kinds(model) - {target}:
        return model
    swapped = keras.models.clone_model(
        model, clone_function=_swap_batch_norm(target), recursive=True
    )
    swapped.set_weights(model.get_weights())
    compile_config = model.get_compile_config() if model.compiled else None
    if compile_config:
        with keras.saving.custom_object_scope(kwargs.get("custom_objects") or {}):
            swapped.compile_from_config(compile_config)
        _copy_optimizer_state(model, swapped)
    return swapped


def _copy_optimizer_state(source: keras.Model, target: keras.Model) -> None:
    """The values of `source`'s optimizer variables into `target`'s (both built on the
    same trainable variables, in the same order)."""
    old = getattr(source, "optimizer", None)
    new = getattr(target, "optimizer", None)
    if old is None or new is None or not old.variables:
        return
    if not new.variables:
        new.build(target.trainable_variables)
    old_shapes = [tuple(v.shape) for v in old.variables]
    new_shapes = [tuple(v.shape) for v in new.variables]
    if old_shapes != new_shapes:
        raise ValueError(
            "load_model: the rebuilt model's optimizer does not match the loaded one's; "
            f"received variable shapes {new_shapes} for {old_shapes}"
        )
    for variable, value in zip(new.variables, old.variables, strict=True):
        variable.assign(value)
