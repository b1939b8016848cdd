"""One `apply_*(x, spec, *, name, ...)` function per Inception module kind.

Every layer is named `f"{name}_{part}"` (`name` holds no underscore), so weights,
summaries, `analysis.report` rows and feature taps are addressable by module.
"""

from __future__ import annotations

from keras import layers

from keras_inception.layers import ConvStyle, conv_bn_act
from keras_inception.specs import V1Module


def apply_inception_v1(
    x,
    spec: V1Module,
    *,
    style: ConvStyle,
    branch5x5_kernel: int = 5,
    name: str,
):
    """The Inception module of "Going deeper with convolutions" (Figure 2b).

    Branches: 1x1 | 1x1 reduce -> 3x3 | 1x1 reduce -> 5x5 | 3x3/1 max pool -> 1x1 pool
    projection, concatenated on channels (`spec.out_channels`).

    Args:
        x: KerasTensor. Channels-last input.
        spec: V1Module. Branch widths.
        style: ConvStyle. Batch norm or bias after each convolution.
        branch5x5_kernel: int. Kernel of the "5x5" branch: 5 is the paper; 3 is the
            TF-Slim/torchvision layout, whose documented deviation uses one 3x3 here. The
            layers keep the `5x5` name either way, so weights stay addressable.
        name: str. Prefix of every layer, e.g. `"inception3a"`.
    """
    branch1 = conv_bn_act(x, spec.conv1x1, 1, style=style, name=f"{name}_1x1")

    branch2 = conv_bn_act(x, spec.reduce3x3, 1, style=style, name=f"{name}_3x3_reduce")
    branch2 = conv_bn_act(branch2, spec.conv3x3, 3, style=style, name=f"{name}_3x3")

    branch3 = conv_bn_act(x, spec.reduce5x5, 1, style=style, name=f"{name}_5x5_reduce")
    branch3 = conv_bn_act(branch3, spec.conv5x5, branch5x5_kernel, style=style, name=f"{name}_5x5")

    branch4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    branch4 = conv_bn_act(branch4, spec.pool_proj, 1, style=style, name=f"{name}_pool_proj")

    return layers.Concatenate(axis=-1, name=f"{name}_concat")([branch1, branch2, branch3, branch4])
