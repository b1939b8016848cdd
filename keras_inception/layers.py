"""conv_bn_act and the few custom layers (registered, serializable).

Everything here uses `keras.layers` / `keras.ops` only, so the models run on every Keras
backend.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers, ops


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
    """

    batch_norm: bool = True
    bn_scale: bool = True
    bn_epsilon: float = 1e-3
    bn_momentum: float = 0.99
    sync_batch_norm: bool = False

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
    """Conv2D -> [BatchNormalization] -> ReLU; layers named `{name}_conv|_bn|_relu`."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=not style.batch_norm,
        name=f"{name}_conv",
    )(x)
    if style.batch_norm:
        x = layers.BatchNormalization(
            axis=-1,
            momentum=style.bn_momentum,
            epsilon=style.bn_epsilon,
            scale=style.bn_scale,
            synchronized=style.sync_batch_norm,
            name=f"{name}_bn",
        )(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


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
    >>> layer(ops.ones((1, 2, 2, 8))).shape
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
