"""One `apply_*(x, spec, *, name, ...)` function per Inception module kind.

Every layer is named `f"{name}_{part}"` (`name` holds no underscore), so weights,
summaries, `analysis.report` rows and feature taps are addressable by module.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from keras import layers

from keras_inception.layers import ConvStyle, LocalResponseNormalization, conv_bn_act
from keras_inception.specs import (
    BNModule,
    BNReduction,
    V1Module,
    V3ModuleA,
    V3ModuleB,
    V3ModuleC,
    V3ReductionA,
    V3ReductionB,
)


class StemLayer(NamedTuple):
    """One layer of a stem, as data: `apply_stem` wires it, a family's `minimum_size`
    follows its kernel and stride.

    Args:
        name: str. Layer (and module) name, e.g. `"conv1a"`.
        kind: str. "conv" (conv_bn_act), "separable" (separable conv with bias + ReLU,
            TF-Slim's BN-Inception stem), "maxpool", or "lrn" (the GoogLeNet paper's
            `LocalResponseNormalization`, only in a network without batch norm, which
            replaces it).
        kernel: int. Square kernel / pool window (1 for "lrn").
        strides: int. Stride.
        padding: str. "same", "valid" or "torch" (padding as torch pads a stride-2
            layer; see `apply_max_pool`, `apply_stem`). Defaults to "same".
        width: str or None. The stem spec's field that holds a convolution's width.
            Defaults to None: the field named `name`.
    """

    name: str
    kind: str
    kernel: int = 1
    strides: int = 1
    padding: str = "same"
    width: str | None = None


STEM_LAYER_KINDS = ("conv", "separable", "maxpool", "lrn")


def apply_max_pool(x, kernel: int, *, strides: int, padding: str, name: str):
    """Max pool named `name`. `padding="torch"` is torch's `ceil_mode=True` without
    padding: one zero row and column at the bottom and right (layer `{name}_pad`), then
    "valid" pooling, gives `ceil((n - kernel) / strides) + 1` at every size. Zero padding
    equals torch's -inf where the pool reads ReLU outputs (never negative) and no window
    lies wholly in the padding: GoogLeNet's stride-2 pools."""
    if padding == "torch":
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x)
        padding = "valid"
    return layers.MaxPooling2D(kernel, strides=strides, padding=padding, name=name)(x)


def apply_stem(x, spec: Any, stem_layers: tuple[StemLayer, ...], *, style: ConvStyle):
    """Wires `stem_layers` in order, taking each convolution's width from `spec`.

    A "conv" padded "torch" pads `kernel // 2` on each side (layer `{name}_pad`), then
    convolves "valid", as torch's `Conv2d(padding=kernel // 2)`.

    Example:
    >>> from keras_inception.specs import V1Stem
    >>> stem = (StemLayer("conv1", "conv", 3), StemLayer("pool1", "maxpool", 3, 2))
    >>> x = apply_stem(layers.Input((32, 32, 3)), V1Stem(8, 8, 8), stem, style=ConvStyle())
    >>> tuple(x.shape)
    (None, 16, 16, 8)
    """
    for layer in stem_layers:
        if layer.kind not in STEM_LAYER_KINDS:
            raise ValueError(f"unknown stem layer kind {layer.kind!r} in {layer}")
        width = getattr(spec, layer.width or layer.name, None)
        if layer.kind in ("conv", "separable") and width is None:
            raise ValueError(
                f"stem layer {layer} needs the width field "
                f"{layer.width or layer.name!r}; received spec {spec!r}"
            )
        if layer.kind == "maxpool":
            x = apply_max_pool(
                x, layer.kernel, strides=layer.strides, padding=layer.padding, name=layer.name
            )
        elif layer.kind == "lrn":
            if not style.batch_norm:  # the paper's LRN; batch norm replaces it
                x = LocalResponseNormalization(name=layer.name)(x)
        elif layer.kind == "separable":
            # TF-Slim's separable_conv2d sits outside the conv2d arg scope that adds batch
            # norm: it keeps its bias and ReLU whatever `style` says.
            x = layers.SeparableConv2D(
                width,
                layer.kernel,
                strides=layer.strides,
                padding=layer.padding,
                depth_multiplier=spec.depth_multiplier,
                name=f"{layer.name}_conv",
            )(x)
            x = layers.Activation("relu", name=f"{layer.name}_relu")(x)
        else:
            padding = layer.padding
            if padding == "torch":
                x = layers.ZeroPadding2D(layer.kernel // 2, name=f"{layer.name}_pad")(x)
                padding = "valid"
            x = conv_bn_act(
                x,
                width,
                layer.kernel,
                strides=layer.strides,
                padding=padding,
                style=style,
                name=layer.name,
            )
    return x


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


def _avg_pool_proj(
    x,
    filters: int,
    *,
    style: ConvStyle,
    pool: str = "avg",
    count_include_pad: bool = False,
    name: str,
):
    """3x3/1 pool -> 1x1 projection. `count_include_pad` (average pools only) divides
    every window sum by 9, counting the zero padding as torch's `F.avg_pool2d(x, 3, 1, 1)`
    does; Keras "same" (and TF-Slim) divide by the number of cells inside the map."""
    if pool == "avg" and count_include_pad:
        x = layers.ZeroPadding2D(1, name=f"{name}_pool_pad")(x)
        x = layers.AveragePooling2D(3, strides=1, padding="valid", name=f"{name}_pool")(x)
    else:
        pool_layer = layers.AveragePooling2D if pool == "avg" else layers.MaxPooling2D
        x = pool_layer(3, strides=1, padding="same", name=f"{name}_pool")(x)
    return conv_bn_act(x, filters, 1, style=style, name=f"{name}_pool_proj")


def _conv_3x3_stride2(x, filters: int, *, style: ConvStyle, padding: str, name: str):
    """The 3x3/2 convolution that ends a grid reduction's conv branch, padded `padding`."""
    return conv_bn_act(x, filters, 3, strides=2, padding=padding, style=style, name=name)


def _branch_3x3dbl(
    x, spec: Any, *, style: ConvStyle, strides: int = 1, padding: str = "same", name: str
):
    """The 1x1 -> 3x3 -> 3x3 branch of `spec.reduce3x3dbl` and `spec.conv3x3dbl` widths
    (layers `{name}_3x3dbl_reduce`, `_3x3dbl_1`, `_3x3dbl_2`); the last 3x3 has `strides`
    and `padding` (a grid reduction's 3x3/2)."""
    x = conv_bn_act(x, spec.reduce3x3dbl, 1, style=style, name=f"{name}_3x3dbl_reduce")
    x = conv_bn_act(x, spec.conv3x3dbl, 3, style=style, name=f"{name}_3x3dbl_1")
    return conv_bn_act(
        x, spec.conv3x3dbl, 3, strides=strides, padding=padding, style=style,
        name=f"{name}_3x3dbl_2",
    )  # fmt: skip


def _concat_with_max_pool(x, branches: list, *, padding: str, name: str):
    """The end of every grid reduction: `branches` and a 3x3/2 max pool of `x` (padded
    `padding`), concatenated."""
    pool = layers.MaxPooling2D(3, strides=2, padding=padding, name=f"{name}_pool")(x)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([*branches, pool])


def apply_inception_v3_a(
    x, spec: V3ModuleA, *, style: ConvStyle, count_include_pad: bool = False, name: str
):
    """35x35 module of InceptionV3 (keras `mixed0`-`mixed2`, TF-Slim `Mixed_5b`-`5d`).

    Branches: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | 3x3/1 avg pool -> 1x1, concatenated
    (`spec.out_channels`). InceptionV3 keeps one 5x5 branch here although "Rethinking"
    Figure 5 factorizes every 5x5; so do keras.applications and TF-Slim.

    Args:
        x: KerasTensor. Channels-last input.
        spec: V3ModuleA. Branch widths.
        style: ConvStyle. Batch norm or bias after each convolution.
        name: str. Prefix of every layer, e.g. `"mixed5b"`.
    """
    branch1 = conv_bn_act(x, spec.conv1x1, 1, style=style, name=f"{name}_1x1")

    branch2 = conv_bn_act(x, spec.reduce5x5, 1, style=style, name=f"{name}_5x5_reduce")
    branch2 = conv_bn_act(branch2, spec.conv5x5, 5, style=style, name=f"{name}_5x5")

    branch3 = _branch_3x3dbl(x, spec, style=style, name=name)

    branch4 = _avg_pool_proj(
        x, spec.pool_proj, style=style, count_include_pad=count_include_pad, name=name
    )
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([branch1, branch2, branch3, branch4])


def apply_inception_v3_reduction_a(
    x, spec: V3ReductionA, *, style: ConvStyle, padding: str = "valid", name: str
):
    """Grid reduction 35x35 -> 17x17 (keras `mixed3`, TF-Slim `Mixed_6a`, "Rethinking" Fig. 10).

    Branches: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max pool; the stride-2 layers pad
    `padding` ("valid" in InceptionV3: 35 -> 17).
    """
    branch1 = _conv_3x3_stride2(x, spec.conv3x3, style=style, padding=padding, name=f"{name}_3x3")

    branch2 = _branch_3x3dbl(x, spec, style=style, strides=2, padding=padding, name=name)
    return _concat_with_max_pool(x, [branch1, branch2], padding=padding, name=name)


def apply_inception_v3_b(
    x, spec: V3ModuleB, *, style: ConvStyle, count_include_pad: bool = False, name: str
):
    """17x17 module with 7x7 convolutions factorized into 1x7 and 7x1 (keras `mixed4`-`7`).

    Branches: 1x1 | 1x1 -> 1x7 -> 7x1 | 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 | avg pool -> 1x1.
    """
    c7 = spec.channels_7x7
    branch1 = conv_bn_act(x, spec.conv1x1, 1, style=style, name=f"{name}_1x1")

    branch2 = conv_bn_act(x, c7, 1, style=style, name=f"{name}_7x7_reduce")
    branch2 = conv_bn_act(branch2, c7, (1, 7), style=style, name=f"{name}_7x7_1")
    branch2 = conv_bn_act(branch2, spec.conv7x7, (7, 1), style=style, name=f"{name}_7x7_2")

    branch3 = conv_bn_act(x, c7, 1, style=style, name=f"{name}_7x7dbl_reduce")
    branch3 = conv_bn_act(branch3, c7, (7, 1), style=style, name=f"{name}_7x7dbl_1")
    branch3 = conv_bn_act(branch3, c7, (1, 7), style=style, name=f"{name}_7x7dbl_2")
    branch3 = conv_bn_act(branch3, c7, (7, 1), style=style, name=f"{name}_7x7dbl_3")
    branch3 = conv_bn_act(branch3, spec.conv7x7dbl, (1, 7), style=style, name=f"{name}_7x7dbl_4")

    branch4 = _avg_pool_proj(
        x, spec.pool_proj, style=style, count_include_pad=count_include_pad, name=name
    )
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([branch1, branch2, branch3, branch4])


def apply_inception_v3_reduction_b(
    x, spec: V3ReductionB, *, style: ConvStyle, padding: str = "valid", name: str
):
    """Grid reduction 17x17 -> 8x8 (keras `mixed8`, TF-Slim `Mixed_7a`).

    Branches: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | 3x3/2 max pool.
    """
    branch1 = conv_bn_act(x, spec.reduce3x3, 1, style=style, name=f"{name}_3x3_reduce")
    branch1 = _conv_3x3_stride2(
        branch1, spec.conv3x3, style=style, padding=padding, name=f"{name}_3x3"
    )

    c7 = spec.reduce7x7x3
    branch2 = conv_bn_act(x, c7, 1, style=style, name=f"{name}_7x7x3_reduce")
    branch2 = conv_bn_act(branch2, c7, (1, 7), style=style, name=f"{name}_7x7x3_1")
    branch2 = conv_bn_act(branch2, c7, (7, 1), style=style, name=f"{name}_7x7x3_2")
    branch2 = _conv_3x3_stride2(
        branch2, spec.conv7x7x3, style=style, padding=padding, name=f"{name}_7x7x3_3"
    )
    return _concat_with_max_pool(x, [branch1, branch2], padding=padding, name=name)


def apply_inception_v3_c(
    x, spec: V3ModuleC, *, style: ConvStyle, count_include_pad: bool = False, name: str
):
    """8x8 module with expanded filter banks (keras `mixed9`-`10`, "Rethinking" Fig. 7).

    Branches: 1x1 | 1x1 -> [1x3, 3x1] | 1x1 -> 3x3 -> [1x3, 3x1] | avg pool -> 1x1, where
    each `[1x3, 3x1]` pair reads the same tensor and is concatenated.
    """
    branch1 = conv_bn_act(x, spec.conv1x1, 1, style=style, name=f"{name}_1x1")

    branch2 = conv_bn_act(x, spec.reduce3x3, 1, style=style, name=f"{name}_3x3_reduce")
    branch2 = layers.Concatenate(axis=-1, name=f"{name}_3x3_concat")(
        [
            conv_bn_act(branch2, spec.conv3x3, (1, 3), style=style, name=f"{name}_3x3_1x3"),
            conv_bn_act(branch2, spec.conv3x3, (3, 1), style=style, name=f"{name}_3x3_3x1"),
        ]
    )

    branch3 = conv_bn_act(x, spec.reduce3x3dbl, 1, style=style, name=f"{name}_3x3dbl_reduce")
    branch3 = conv_bn_act(branch3, spec.conv3x3dbl, 3, style=style, name=f"{name}_3x3dbl_1")
    branch3 = layers.Concatenate(axis=-1, name=f"{name}_3x3dbl_concat")(
        [
            conv_bn_act(branch3, spec.conv3x3dbl, (1, 3), style=style, name=f"{name}_3x3dbl_1x3"),
            conv_bn_act(branch3, spec.conv3x3dbl, (3, 1), style=style, name=f"{name}_3x3dbl_3x1"),
        ]
    )

    branch4 = _avg_pool_proj(
        x, spec.pool_proj, style=style, count_include_pad=count_include_pad, name=name
    )
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([branch1, branch2, branch3, branch4])


def apply_bn_inception(
    x, spec: BNModule, *, style: ConvStyle, count_include_pad: bool = False, name: str
):
    """BN-Inception module (Ioffe & Szegedy 2015, Figure 5 of "Rethinking"; TF-Slim
    `inception_v2` `Mixed_3b`...): the 5x5 branch of Inception v1 as two stacked 3x3.

    Branches: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | 3x3/1 `spec.pool` pool -> 1x1.
    """
    branch1 = conv_bn_act(x, spec.conv1x1, 1, style=style, name=f"{name}_1x1")

    branch2 = conv_bn_act(x, spec.reduce3x3, 1, style=style, name=f"{name}_3x3_reduce")
    branch2 = conv_bn_act(branch2, spec.conv3x3, 3, style=style, name=f"{name}_3x3")

    branch3 = _branch_3x3dbl(x, spec, style=style, name=name)

    branch4 = _avg_pool_proj(
        x,
        spec.pool_proj,
        style=style,
        pool=spec.pool,
        count_include_pad=count_include_pad,
        name=name,
    )
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([branch1, branch2, branch3, branch4])


def apply_bn_inception_reduction(x, spec: BNReduction, *, style: ConvStyle, name: str):
    """BN-Inception grid reduction (TF-Slim `Mixed_4a`, `Mixed_5a`), padded "same".

    Branches: 1x1 -> 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max pool.
    """
    padding = "same"
    branch1 = conv_bn_act(x, spec.reduce3x3, 1, style=style, name=f"{name}_3x3_reduce")
    branch1 = _conv_3x3_stride2(
        branch1, spec.conv3x3, style=style, padding=padding, name=f"{name}_3x3"
    )

    branch2 = _branch_3x3dbl(x, spec, style=style, strides=2, padding=padding, name=name)
    return _concat_with_max_pool(x, [branch1, branch2], padding=padding, name=name)


# Module kind -> its apply function; grid reductions -> the padding of their 3x3/2 layers.
MODULE_BLOCKS = {
    V1Module: apply_inception_v1,
    V3ModuleA: apply_inception_v3_a,
    V3ReductionA: apply_inception_v3_reduction_a,
    V3ModuleB: apply_inception_v3_b,
    V3ReductionB: apply_inception_v3_reduction_b,
    V3ModuleC: apply_inception_v3_c,
    BNModule: apply_bn_inception,
    BNReduction: apply_bn_inception_reduction,
}
REDUCTION_PADDING = {V3ReductionA: "valid", V3ReductionB: "valid", BNReduction: "same"}


# Module kinds whose pool branch may average (they take `count_include_pad`).
POOL_BRANCH_KINDS = (V3ModuleA, V3ModuleB, V3ModuleC, BNModule)


def apply_module(x, spec: Any, *, style: ConvStyle, count_include_pad: bool = False, name: str):
    """Applies the block of `spec`'s kind (see `MODULE_BLOCKS`); `count_include_pad`
    reaches the blocks with an average-pool branch (`POOL_BRANCH_KINDS`)."""
    if type(spec) not in MODULE_BLOCKS:
        raise ValueError(f"{name}: no block for spec {spec!r}")
    options = {"count_include_pad": count_include_pad} if type(spec) in POOL_BRANCH_KINDS else {}
    return MODULE_BLOCKS[type(spec)](x, spec, style=style, name=name, **options)


def reduction_padding(spec: Any) -> str | None:
    """Padding of a grid reduction's 3x3/2 layers; None for a module that keeps the grid."""
    return REDUCTION_PADDING.get(type(spec))
