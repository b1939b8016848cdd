"""InceptionV2, in two variants.

- `"rethinking"`: the Inception-v2 of Szegedy et al., "Rethinking the Inception
  Architecture for Computer Vision" (CVPR 2016, https://arxiv.org/abs/1512.00567): the
  modules of InceptionV3 with an unfactorized 7x7/2 stem convolution and an auxiliary
  head without batch norm (InceptionV3 = Inception-v2 + BN-auxiliary + factorized stem).
- `"bn_inception"`: BN-Inception, Ioffe & Szegedy, "Batch Normalization: Accelerating Deep
  Network Training by Reducing Internal Covariate Shift" (ICML 2015,
  https://arxiv.org/abs/1502.03167), with the widths of TF-Slim's `inception_v2`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import keras

from keras_inception import builder
from keras_inception.blocks import StemLayer
from keras_inception.builder import sequential_body, spatial_sides
from keras_inception.heads import apply_aux_head_v3, aux_head_v3_widths
from keras_inception.layers import ConvStyle
from keras_inception.specs import (
    BNInceptionStem,
    BNModule,
    BNReduction,
    V2Stem,
    V3ModuleA,
    V3ModuleB,
    V3ModuleC,
    V3ReductionA,
    V3ReductionB,
)

VARIANTS = ("rethinking", "bn_inception")

# The 35x35, 17x17 and 8x8 modules of the "Rethinking" paper, which its Inception-v2 and
# InceptionV3 share (InceptionV3 = Inception-v2 + BN-auxiliary + factorized stem; the
# widths are those of keras.applications.InceptionV3 and TF-Slim's inception_v3, hence
# the name). Keys: TF-Slim's Mixed_<key>; the first character is the stage. Sizes in
# comments are at 299x299 with the ImageNet stem.
V3_MODULE_SPECS: Mapping[str, Any] = MappingProxyType(
    {
        "5b": V3ModuleA(conv1x1=64, reduce5x5=48, conv5x5=64, reduce3x3dbl=64, conv3x3dbl=96, pool_proj=32),  # 35x35x256
        "5c": V3ModuleA(conv1x1=64, reduce5x5=48, conv5x5=64, reduce3x3dbl=64, conv3x3dbl=96, pool_proj=64),  # 35x35x288
        "5d": V3ModuleA(conv1x1=64, reduce5x5=48, conv5x5=64, reduce3x3dbl=64, conv3x3dbl=96, pool_proj=64),  # 35x35x288
        "6a": V3ReductionA(conv3x3=384, reduce3x3dbl=64, conv3x3dbl=96),  # 17x17x768
        "6b": V3ModuleB(conv1x1=192, channels_7x7=128, conv7x7=192, conv7x7dbl=192, pool_proj=192),  # 17x17x768
        "6c": V3ModuleB(conv1x1=192, channels_7x7=160, conv7x7=192, conv7x7dbl=192, pool_proj=192),
        "6d": V3ModuleB(conv1x1=192, channels_7x7=160, conv7x7=192, conv7x7dbl=192, pool_proj=192),
        "6e": V3ModuleB(conv1x1=192, channels_7x7=192, conv7x7=192, conv7x7dbl=192, pool_proj=192),
        "7a": V3ReductionB(reduce3x3=192, conv3x3=320, reduce7x7x3=192, conv7x7x3=192),  # 8x8x1280
        "7b": V3ModuleC(conv1x1=320, reduce3x3=384, conv3x3=384, reduce3x3dbl=448, conv3x3dbl=384, pool_proj=192),  # 8x8x2048
        "7c": V3ModuleC(conv1x1=320, reduce3x3=384, conv3x3=384, reduce3x3dbl=448, conv3x3dbl=384, pool_proj=192),  # 8x8x2048
    }
)  # fmt: skip
AUX_MAP = 5  # the auxiliary head (apply_aux_head_v3) pools its input to 5x5

# "Rethinking": InceptionV3's modules behind a 7x7/2 stem convolution.
INCEPTION_V2_SPECS: Mapping[str, Any] = MappingProxyType(
    {"stem": V2Stem(conv1a=64, conv3b=80, conv4a=192), **V3_MODULE_SPECS}
)

# The 7x7/2 convolution (valid) gives the 147x147 map that V3's three 3x3 convolutions
# give, so every later size equals InceptionV3's. "small": as InceptionV3's small stem.
V2_STEM_LAYERS: Mapping[str, tuple[StemLayer, ...]] = MappingProxyType(
    {
        "imagenet": (
            StemLayer("conv1a", "conv", 7, 2, "valid"),  # 147x147x64
            StemLayer("pool3a", "maxpool", 3, 2, "valid"),  # 73x73x64
            StemLayer("conv3b", "conv", 1, 1, "valid"),  # 73x73x80
            StemLayer("conv4a", "conv", 3, 1, "valid"),  # 71x71x192
            StemLayer("pool5a", "maxpool", 3, 2, "valid"),  # 35x35x192
        ),
        "small": (
            StemLayer("conv1a", "conv", 3),
            StemLayer("conv3b", "conv", 1),
            StemLayer("conv4a", "conv", 3),  # 32x32x192
        ),
    }
)
V2_AUX_TAPS: Mapping[str, str] = MappingProxyType({"6e": "aux"})

# BN-Inception, TF-Slim inception_v2 widths (Mixed_<key>). Sizes at 224x224.
BN_INCEPTION_SPECS: Mapping[str, Any] = MappingProxyType(
    {
        "stem": BNInceptionStem(conv1a=64, conv2b=64, conv2c=192),  # 28x28x192
        "3b": BNModule(conv1x1=64, reduce3x3=64, conv3x3=64, reduce3x3dbl=64, conv3x3dbl=96, pool_proj=32),  # 28x28x256
        "3c": BNModule(conv1x1=64, reduce3x3=64, conv3x3=96, reduce3x3dbl=64, conv3x3dbl=96, pool_proj=64),  # 28x28x320
        "4a": BNReduction(reduce3x3=128, conv3x3=160, reduce3x3dbl=64, conv3x3dbl=96),  # 14x14x576
        "4b": BNModule(conv1x1=224, reduce3x3=64, conv3x3=96, reduce3x3dbl=96, conv3x3dbl=128, pool_proj=128),  # 14x14x576
        "4c": BNModule(conv1x1=192, reduce3x3=96, conv3x3=128, reduce3x3dbl=96, conv3x3dbl=128, pool_proj=128),
        "4d": BNModule(conv1x1=160, reduce3x3=128, conv3x3=160, reduce3x3dbl=128, conv3x3dbl=160, pool_proj=96),
        "4e": BNModule(conv1x1=96, reduce3x3=128, conv3x3=192, reduce3x3dbl=160, conv3x3dbl=192, pool_proj=96),
        "5a": BNReduction(reduce3x3=128, conv3x3=192, reduce3x3dbl=192, conv3x3dbl=256),  # 7x7x1024
        "5b": BNModule(conv1x1=352, reduce3x3=192, conv3x3=320, reduce3x3dbl=160, conv3x3dbl=224, pool_proj=128),  # 7x7x1024
        "5c": BNModule(conv1x1=352, reduce3x3=192, conv3x3=320, reduce3x3dbl=192, conv3x3dbl=224, pool_proj=128, pool="max"),
    }
)  # fmt: skip

# TF-Slim pads "same" everywhere. "small": the separable convolution at 3x3/1 and no max
# pools, so a 32x32 input runs the stages at 32x32, 16x16 and 8x8.
BN_STEM_LAYERS: Mapping[str, tuple[StemLayer, ...]] = MappingProxyType(
    {
        "imagenet": (
            StemLayer("conv1a", "separable", 7, 2),  # 112x112x64
            StemLayer("pool2a", "maxpool", 3, 2),  # 56x56x64
            StemLayer("conv2b", "conv", 1),  # 56x56x64
            StemLayer("conv2c", "conv", 3),  # 56x56x192
            StemLayer("pool3a", "maxpool", 3, 2),  # 28x28x192
        ),
        "small": (
            StemLayer("conv1a", "separable", 3),
            StemLayer("conv2b", "conv", 1),
            StemLayer("conv2c", "conv", 3),  # 32x32x192
        ),
    }
)
# TF-Slim's inception_v2 has no auxiliary head; ours (optional) reads the last 14x14
# module, as InceptionV3's reads its last 17x17 one.
BN_AUX_TAPS: Mapping[str, str] = MappingProxyType({"4e": "aux"})
_BN_STEM_STRIDES = MappingProxyType({"imagenet": 8, "small": 1})

ARCHITECTURES: Mapping[str, builder.Architecture] = MappingProxyType(
    {
        "rethinking": builder.Architecture(
            family="inception_v2",
            default_size=299,
            default_specs=INCEPTION_V2_SPECS,
            stems=("imagenet", "small"),
            minimum_size=builder.searched_minimum_size(
                spatial_sides(V2_STEM_LAYERS, INCEPTION_V2_SPECS, V2_AUX_TAPS), AUX_MAP
            ),
            body=sequential_body(V2_STEM_LAYERS, V2_AUX_TAPS),
            aux_head=apply_aux_head_v3,
            feature_taps=builder.module_taps("mixed", {"5d": 1, "6e": 2, "7c": 4}),
            stem_strides=builder.stem_strides(V2_STEM_LAYERS),
        ),
        "bn_inception": builder.Architecture(
            family="inception_v2 (variant='bn_inception')",
            default_size=224,
            default_specs=BN_INCEPTION_SPECS,
            stems=("imagenet", "small"),
            minimum_size=builder.same_padding_minimum_size(
                _BN_STEM_STRIDES,
                {stem: 2 * s for stem, s in _BN_STEM_STRIDES.items()},
                aux_map=AUX_MAP,
            ),
            body=sequential_body(BN_STEM_LAYERS, BN_AUX_TAPS),
            aux_head=apply_aux_head_v3,
            feature_taps=builder.module_taps("mixed", {"3c": 1, "4e": 2, "5c": 4}),
            stem_strides=builder.stem_strides(BN_STEM_LAYERS),
        ),
    }
)


def build_inception_v2(
    *,
    variant: str = "rethinking",
    include_top: bool = True,
    weights: str | None = None,
    input_tensor: Any = None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    aux_logits: bool = False,
    sync_batch_norm: bool = False,
    fused_batch_norm: bool = True,
    bn_momentum: float = 0.99,
    dropout: float = 0.2,
    stem: str = "imagenet",
    width_multiplier: float = 1.0,
    min_depth: int = 16,
    bottleneck_ratio: float = 1.0,
    specs: Mapping[str, Any] | None = None,
    name: str = "inception_v2",
    include_preprocessing: str | None = None,
) -> keras.Model:
    """InceptionV2, in the conventions of `keras.applications`.

    References: Szegedy et al., "Rethinking the Inception Architecture for Computer
    Vision" (CVPR 2016) for `variant="rethinking"`; Ioffe & Szegedy, "Batch
    Normalization" (ICML 2015) and TF-Slim's `inception_v2` for `variant="bn_inception"`.

    `"rethinking"` (23,832,488 parameters at 299x299): InceptionV3's modules and widths
    (`INCEPTION_V2_SPECS`) behind one 7x7/2 convolution of 64 filters (valid padding) in
    place of V3's three 3x3 convolutions; its optional auxiliary head has no batch norm
    (conv bias instead): "BN-auxiliary" is what the paper adds for InceptionV3.
    `"bn_inception"` (base network 10,173,112 parameters, as TF-Slim's test asserts):
    separable 7x7/2 stem convolution with depth multiplier 8 (with bias and without batch
    norm, as in TF-Slim), every 5x5 convolution factorized into two 3x3
    (`BN_INCEPTION_SPECS`), module outputs 256, 320, 576 x5, 1024 x3; default input 224.
    Both use batch norm without scale (TF-Slim) after every other convolution.

    Known deviations: the paper gives the Inception-v2 stem only as a description, not as
    a table of widths and paddings; we keep V3's 64-channel first map with the 7x7/2 conv
    and valid padding, so every later size equals V3's. TF-Slim's BN-Inception has no
    auxiliary head; `aux_logits=True` adds the "Rethinking" head on Mixed_4e (our
    addition). Dropout 0.2 before the classifier (TF-Slim's keep probability 0.8).

    Args:
        variant: str. "rethinking" or "bn_inception". Defaults to "rethinking".
        include_top: bool. Include the dropout and classifier on top. Defaults to True.
        weights: str or None. None or a path to a file written by `model.save_weights`;
            Keras publishes no InceptionV2 weights, so "imagenet" raises a ValueError.
            Defaults to None.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: tuple. `(height, width, channels)`. Defaults to `(299, 299, 3)`
            ("rethinking") or `(224, 224, 3)` ("bn_inception") with the top. At least
            75x75 ("rethinking") or 32x32 ("bn_inception") with the ImageNet stem.
        pooling: None, "avg" or "max". Global pooling of the features when
            `include_top=False`. Defaults to None.
        classes: int. Number of classes. Defaults to 1000.
        classifier_activation: str or None. Activation of every classifier output.
            Defaults to "softmax".
        aux_logits: bool. Add the auxiliary classifier (after Mixed_6e, or Mixed_4e for
            BN-Inception); outputs `{"main", "aux"}`, loss weight 0.4 in
            `default_loss_weights`. Defaults to False.
        sync_batch_norm: bool. Synchronized BN across replicas. Defaults to False.
        fused_batch_norm: bool. Batch norm on TensorFlow's fused kernel
            (`FusedBatchNormalization`: same weights and numbers, faster training; Keras's
            own computation on other backends). False: `keras.layers.BatchNormalization`.
            Defaults to True.
        bn_momentum: float. Momentum of the BN moving mean and variance (Keras's:
            `moving = momentum * moving + (1 - momentum) * batch`). Lower it when an
            epoch has few steps. Defaults to 0.99.
        dropout: float. Dropout before the classifier. Defaults to 0.2.
        stem: str. "imagenet" or "small" (stride 1, no max pools, for 32x32 inputs).
            Defaults to "imagenet".
        width_multiplier: float. TF-Slim's depth_multiplier. Defaults to 1.0.
        min_depth: int. Smallest scaled width. Defaults to 16.
        bottleneck_ratio: float. Further scales only the reduce widths. Defaults to 1.0.
        specs: mapping. A full width table of the variant's types. Defaults to
            `INCEPTION_V2_SPECS` or `BN_INCEPTION_SPECS`.
        name: str. Model name. Defaults to "inception_v2".
        include_preprocessing: str or None. "inception" or "torch": the model takes raw
            pixels and normalizes them itself, as in `build_googlenet`. Defaults to None.

    Returns:
        A `keras.Model`.

    Examples:
    >>> model = build_inception_v2(variant="bn_inception", include_top=False)
    >>> model.count_params()
    10173112
    """
    if variant not in ARCHITECTURES:
        raise ValueError(f"variant must be one of {list(ARCHITECTURES)}; received {variant!r}")
    aux_options = aux_head_v3_widths(width_multiplier, min_depth)
    if variant == "rethinking":
        aux_options["batch_norm"] = False
    return builder.build(
        ARCHITECTURES[variant],
        **builder.common_arguments(locals()),
        style=ConvStyle(
            batch_norm=True,
            bn_scale=False,
            sync_batch_norm=sync_batch_norm,
            fused_batch_norm=fused_batch_norm,
            bn_momentum=bn_momentum,
        ),
        aux_options=aux_options,
    )
