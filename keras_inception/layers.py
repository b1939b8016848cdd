"""conv_bn_act, torchvision's input transform and the one custom layer (registered,
serializable): `LocalResponseNormalization`.

Everything here uses `keras.layers` / `keras.ops` only, so the models run on every Keras
backend. torch's adaptive average pool is Keras's `AdaptiveAveragePooling2D`;
`LegacyAdaptiveAveragePooling2D` only loads files that recorded this package's former one.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers, ops

from keras_inception import keras_private
from keras_inception.fused_batchnorm import FusedBatchNormalization


@dataclasses.dataclass(frozen=True)
class ConvStyle:
    """How every convolution of a network is followed: batch norm or bias, and activation.

    Args:
        batch_norm: bool. BatchNormalization after the convolution (and no conv bias).
            False: conv bias, no normalization (the GoogLeNet paper).
        bn_scale: bool. Learn the BN gamma. keras.applications.InceptionV3 uses False.
        bn_epsilon: float. BN epsilon. Defaults to 1e-3 (TF-Slim, torchvision GoogLeNet).
        bn_momentum: float. Moving-average momentum. Defaults to 0.99 (Keras).
        sync_batch_norm: bool. Synchronize BN statistics across replicas under a
            `tf.distribute` strategy (`BatchNormalization(synchronized=True)`).
        fused_batch_norm: bool. Use `FusedBatchNormalization` (TensorFlow's fused
            kernel where it can serve, Keras's own computation elsewhere; same weights
            and numbers). False: plain `keras.layers.BatchNormalization`. Defaults to True.
    """

    batch_norm: bool = True
    bn_scale: bool = True
    bn_epsilon: float = 1e-3
    bn_momentum: float = 0.99
    sync_batch_norm: bool = False
    fused_batch_norm: bool = True

    def __post_init__(self):
        momentum = self.bn_momentum
        if isinstance(momentum, bool) or not isinstance(momentum, int | float):
            raise ValueError(f"bn_momentum must be a number in [0, 1); received {momentum!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"bn_momentum must be in [0, 1); received {momentum!r}")


def conv_bn_act(
    x,
    filters: int,
    kernel_size: int | tuple[int, int],
    *,
    style: ConvStyle,
    strides: int | tuple[int, int] = 1,
    padding: str = "same",
    name: str,
):
    """Conv2D -> [(Fused)BatchNormalization] -> ReLU; layers named `{name}_conv|_bn|_relu`."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=not style.batch_norm,
        name=f"{name}_conv",
    )(x)
    if style.batch_norm:
        batch_norm = (
            FusedBatchNormalization if style.fused_batch_norm else layers.BatchNormalization
        )
        x = batch_norm(
            axis=-1,
            momentum=style.bn_momentum,
            epsilon=style.bn_epsilon,
            scale=style.bn_scale,
            synchronized=style.sync_batch_norm,
            name=f"{name}_bn",
        )(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


# torchvision's `transform_input`: maps inputs normalized with ImageNet's mean and std to
# the [-1, 1] range of Google's Inception weights, per channel `x * scale + offset`.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def apply_transform_input(x, *, name: str = "transform_input"):
    """torchvision's `transform_input` as a plain `Rescaling` layer (RGB, channels-last).

    `x[..., c] * (std[c] / 0.5) + (mean[c] - 0.5) / 0.5`: an image normalized with
    ImageNet's mean and std (`preprocess_input(x, "torchvision")`) becomes the `[-1, 1]`
    image that Google's GoogLeNet and InceptionV3 weights were trained on. torchvision's
    `googlenet(weights=...)` and `inception_v3(weights=...)` switch it on by default.

    Raises:
        ValueError: if the input does not have 3 channels.
    """
    if x.shape[-1] != 3:
        raise ValueError(
            f"transform_input needs RGB inputs (3 channels); received input shape "
            f"{tuple(x.shape[1:])}"
        )
    scale = [s / 0.5 for s in IMAGENET_STD]
    offset = [(m - 0.5) / 0.5 for m in IMAGENET_MEAN]
    return layers.Rescaling(scale, offset=offset, name=name)(x)


def adaptive_pool_bins(size: int, output_size: int) -> list[tuple[int, int]]:
    """`[start, end)` of each output cell of torch's `adaptive_avg_pool2d` along one axis:
    `start = floor(i * size / output_size)`, `end = ceil((i + 1) * size / output_size)`.

    Example:
    >>> adaptive_pool_bins(14, 4)
    [(0, 4), (3, 7), (7, 11), (10, 14)]
    """
    return [
        ((i * size) // output_size, -(-((i + 1) * size) // output_size)) for i in range(output_size)
    ]


# torch's `adaptive_avg_pool2d` is Keras's own layer since Keras 3.15, with the bins of
# `adaptive_pool_bins` (tests/test_layers.py checks every side from 1 to 40 at output 4,
# torchvision GoogLeNet's auxiliary pool). Kept under this name for the imports of
# `keras_inception.AdaptiveAveragePooling2D`.
AdaptiveAveragePooling2D = layers.AdaptiveAveragePooling2D


@keras.saving.register_keras_serializable(
    package="keras_inception", name="AdaptiveAveragePooling2D"
)
class LegacyAdaptiveAveragePooling2D(layers.AdaptiveAveragePooling2D):
    """Loads the `keras_inception>AdaptiveAveragePooling2D` layers of older `.keras` files.

    This package had its own adaptive average pool before Keras 3.15 had one; files saved
    then record it under that registered name, with `output_size` an int and no
    `data_format` (it was channels-last only). This subclass of Keras's layer reads such a
    config, and is saved again as Keras's own layer, so a re-saved file loads without this
    package. Build new models with `keras.layers.AdaptiveAveragePooling2D`.

    Args:
        output_size: int or tuple of 2 ints. Output side(s).
        data_format: str. Defaults to "channels_last", the old layer's only layout.

    Example:
    >>> layer = LegacyAdaptiveAveragePooling2D.from_config({"output_size": 4})
    >>> tuple(layer(ops.ones((1, 14, 14, 8))).shape)
    (1, 4, 4, 8)
    """

    def __init__(self, output_size, data_format: str = "channels_last", **kwargs):
        super().__init__(output_size, data_format=data_format, **kwargs)


# Keras 3 weight files key a layer by its class's `__name__` (see fused_batchnorm.py); the
# old layer's was "AdaptiveAveragePooling2D", and so is Keras's.
LegacyAdaptiveAveragePooling2D.__name__ = "AdaptiveAveragePooling2D"
# Re-saved files record Keras's own layer (keras_private.serialize_as).
keras_private.serialize_as(LegacyAdaptiveAveragePooling2D, layers.AdaptiveAveragePooling2D)


@keras.saving.register_keras_serializable(package="keras_inception")
class LocalResponseNormalization(layers.Layer):
    """Cross-channel local response normalization (Krizhevsky et al. 2012).

    `y = x / (bias + alpha / size * sum_{|j - c| <= depth_radius} x_j^2) ** beta`, with
    `size = 2 * depth_radius + 1`: Caffe's ACROSS_CHANNELS convention, which the GoogLeNet
    reference model uses (local_size 5, alpha 1e-4, beta 0.75). Note that
    `tf.nn.local_response_normalization` does not divide alpha by the window size.
    Channels-last inputs.

    Args:
        depth_radius: int. Half-width of the channel window. Defaults to 2 (window of 5).
        bias: float. Additive constant k. Defaults to 1.0.
        alpha: float. Scale of the summed squares. Defaults to 1e-4.
        beta: float. Exponent. Defaults to 0.75.

    Example:
    >>> layer = LocalResponseNormalization()
    >>> tuple(layer(ops.ones((1, 2, 2, 8))).shape)
    (1, 2, 2, 8)
    """

    def __init__(
        self,
        depth_radius: int = 2,
        bias: float = 1.0,
        alpha: float = 1e-4,
        beta: float = 0.75,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(depth_radius, bool) or not isinstance(depth_radius, int) or depth_radius < 0:
            raise ValueError(
                f"depth_radius must be a non-negative integer; received {depth_radius!r}"
            )
        self.depth_radius = depth_radius
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        channels = inputs.shape[-1]
        radius = self.depth_radius
        squared = ops.square(inputs)
        padding = [[0, 0]] * (len(inputs.shape) - 1) + [[radius, radius]]
        padded = ops.pad(squared, padding)
        window_sum = padded[..., 0:channels]
        for offset in range(1, 2 * radius + 1):
            window_sum = window_sum + padded[..., offset : offset + channels]
        size = 2 * radius + 1
        return inputs / ops.power(self.bias + (self.alpha / size) * window_sum, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }
