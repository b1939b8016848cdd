"""InceptionV3: Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
CVPR 2016. Reference: https://arxiv.org/abs/1512.00567.

The widths below are those of `keras.applications.InceptionV3` and TF-Slim's
`inception_v3` (the paper's Table 1 gives the module kinds and grid sizes, not every
width). Module names follow TF-Slim (`Mixed_5b` -> layers `mixed5b_*`). The 35x35, 17x17
and 8x8 modules are the "Rethinking" paper's Inception-v2 modules
(`inception_v2.V3_MODULE_SPECS`); keras.applications' weight files load through
`keras_inception.pretrained.keras_applications`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import keras

from keras_inception import builder
from keras_inception.blocks import StemLayer
from keras_inception.builder import sequential_body, spatial_sides
from keras_inception.heads import apply_aux_head_v3, aux_head_v3_widths, check_aux_pool
from keras_inception.inception_v2 import AUX_MAP, V3_MODULE_SPECS
from keras_inception.layers import ConvStyle
from keras_inception.pretrained import keras_applications
from keras_inception.specs import V3Stem

__all__ = [
    "ARCHITECTURE",
    "AUX_MAP",
    "AUX_TAPS",
    "INCEPTION_V3_SPECS",
    "V3_MODULE_SPECS",
    "V3_STEM_LAYERS",
    "build_inception_v3",
    "load_keras_applications_weights",
    "sequential_body",
    "spatial_sides",
]

INCEPTION_V3_SPECS: Mapping[str, Any] = MappingProxyType(
    {"stem": V3Stem(conv1a=32, conv2a=32, conv2b=64, conv3b=80, conv4a=192), **V3_MODULE_SPECS}
)

# Stems as data. "imagenet" is keras.applications / TF-Slim (valid padding, 299 -> 35).
# "small" is ours, for 32x32 inputs (CIFAR): the same five convolutions at stride 1,
# padded "same", without the two max pools, so the three stages run at 32x32, 15x15 and
# 7x7 (the reductions stay valid 3x3/2) and the auxiliary head reads a 15x15 map.
V3_STEM_LAYERS: Mapping[str, tuple[StemLayer, ...]] = MappingProxyType(
    {
        "imagenet": (
            StemLayer("conv1a", "conv", 3, 2, "valid"),  # 149x149x32
            StemLayer("conv2a", "conv", 3, 1, "valid"),  # 147x147x32
            StemLayer("conv2b", "conv", 3, 1, "same"),  # 147x147x64
            StemLayer("pool3a", "maxpool", 3, 2, "valid"),  # 73x73x64
            StemLayer("conv3b", "conv", 1, 1, "valid"),  # 73x73x80
            StemLayer("conv4a", "conv", 3, 1, "valid"),  # 71x71x192
            StemLayer("pool5a", "maxpool", 3, 2, "valid"),  # 35x35x192
        ),
        "small": (
            StemLayer("conv1a", "conv", 3),
            StemLayer("conv2a", "conv", 3),
            StemLayer("conv2b", "conv", 3),
            StemLayer("conv3b", "conv", 1),
            StemLayer("conv4a", "conv", 3),  # 32x32x192
        ),
    }
)

# The auxiliary classifier reads the last 17x17 module (keras mixed7, TF-Slim Mixed_6e).
AUX_TAPS: Mapping[str, str] = MappingProxyType({"6e": "aux"})

# Loads keras.applications' files (the name users knew); see pretrained.keras_applications.
load_keras_applications_weights = keras_applications.load_weights

ARCHITECTURE = builder.Architecture(
    family="inception_v3",
    default_size=299,
    default_specs=INCEPTION_V3_SPECS,
    stems=("imagenet", "small"),
    minimum_size=builder.searched_minimum_size(
        spatial_sides(V3_STEM_LAYERS, INCEPTION_V3_SPECS, AUX_TAPS), AUX_MAP
    ),
    body=sequential_body(V3_STEM_LAYERS, AUX_TAPS),
    aux_head=apply_aux_head_v3,
    load_weights=load_keras_applications_weights,
    feature_taps=builder.module_taps("mixed", {"5d": 1, "6e": 2, "7c": 4}),
    stem_strides=builder.stem_strides(V3_STEM_LAYERS),
)


def build_inception_v3(
    *,
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
    bn_scale: bool = False,
    count_include_pad: bool = False,
    aux_pool: str = "uniform",
    transform_input: bool = False,
    dropout: float = 0.2,
    stem: str = "imagenet",
    width_multiplier: float = 1.0,
    min_depth: int = 16,
    bottleneck_ratio: float = 1.0,
    specs: Mapping[str, Any] | None = None,
    name: str = "inception_v3",
    include_preprocessing: str | None = None,
) -> keras.Model:
    """InceptionV3, in the conventions of `keras.applications`.

    Reference: Szegedy et al., "Rethinking the Inception Architecture for Computer Vision"
    (CVPR 2016).

    The topology and widths of `keras.applications.InceptionV3`: batch norm without scale
    after every convolution, no conv bias; 23,851,784 parameters (21,802,784 without the
    top) and 5,713,216,096 multiply-adds at 299x299. Known deviations: dropout before the
    classifier (TF-Slim's keep probability 0.8; keras.applications has none; it changes
    no weight and no inference output), and an auxiliary head whose pool adapts to the
    input size (exactly 5x5/3 at 299x299).

    torchvision's `Inception3`, output for output at every input size, is
    `build_inception_v3(bn_scale=True, count_include_pad=True, aux_pool="torch",
    dropout=0.5)` (see `keras_inception.from_torchvision`).

    Args:
        include_top: bool. Include the dropout and classifier on top. Defaults to True.
        weights: str or None. None (random init), `"imagenet"` (keras.applications'
            file, fetched through Keras's cache), or a path to a weights file of
            `keras.applications.InceptionV3` (legacy `.h5` or `.weights.h5`, with or
            without the top) or of this model (`model.save_weights`). A file without the
            top leaves the classifier as initialized; the auxiliary head always is.
            Defaults to None.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: tuple. `(height, width, channels)`. Defaults to `(299, 299, 3)`
            with the top, `(None, None, 3)` without. At least 75x75 with the ImageNet
            stem (107x107 with the auxiliary head).
        pooling: None, "avg" or "max". Global pooling of the features when
            `include_top=False`. Defaults to None (the 4D feature map).
        classes: int. Number of classes. Defaults to 1000.
        classifier_activation: str or None. Activation of every classifier output; None
            returns logits. Defaults to "softmax".
        aux_logits: bool. Add the auxiliary classifier after the 17x17 stage (Mixed_6e):
            5x5/3 average pool, 1x1 conv 128, 5x5 conv 768 (conv + BN, "BN-auxiliary";
            both scaled by `width_multiplier` as in TF-Slim), dense `classes`. The model then returns `{"main", "aux"}`; train with
            `loss_weights=keras_inception.default_loss_weights(model)` (aux 0.4, TF-Slim).
            Defaults to False.
        sync_batch_norm: bool. Synchronized BN across replicas. Defaults to False.
        fused_batch_norm: bool. Batch norm on TensorFlow's fused kernel
            (`FusedBatchNormalization`: same weights and numbers, faster training; Keras's
            own computation on other backends). False: `keras.layers.BatchNormalization`.
            Defaults to True.
        bn_momentum: float. Momentum of the BN moving mean and variance (Keras's:
            `moving = momentum * moving + (1 - momentum) * batch`). Lower it when an
            epoch has few steps. Defaults to 0.99.
        bn_scale: bool. Learn a BN gamma after every convolution, as torchvision's
            `BatchNorm2d`; keras.applications and TF-Slim have none. Defaults to False.
        count_include_pad: bool. The 3x3/1 average pools of the module pool branches
            divide by 9 at the border too, counting the zero padding, as torch's
            `F.avg_pool2d(x, 3, 1, 1)` (torchvision). False divides by the cells inside
            the map (Keras "same", TF-Slim). Defaults to False.
        aux_pool: str. Pooling of the auxiliary head: "uniform" (the pool adapts its
            window so that the map stays 5x5) or "torch" (torchvision's `InceptionAux`:
            fixed 5x5/3 pool, then a global average after the 5x5 conv; needs inputs of
            at least 299x299). The same at 299x299. Defaults to "uniform".
        transform_input: bool. Start with torchvision's `transform_input` (a
            `Rescaling` layer): inputs normalized with ImageNet's mean and std become
            the [-1, 1] inputs of Google's weights. Needs 3 channels. Defaults to False.
        dropout: float. Dropout before the classifier. Defaults to 0.2 (TF-Slim).
        stem: str. "imagenet" (keras.applications) or "small" (stride 1, padded, no max
            pools: stages at 32x32, 15x15 and 7x7 for a 32x32 input). Defaults to
            "imagenet".
        width_multiplier: float. Scales every conv width as TF-Slim's depth_multiplier:
            `max(int(w * width_multiplier), min_depth)`. Defaults to 1.0.
        min_depth: int. Smallest scaled width. Defaults to 16.
        bottleneck_ratio: float. Further scales only the reduce widths (the 1x1 convs in
            front of larger convolutions, and `channels_7x7` inside the factorized 7x7
            branches); module outputs are unchanged. Defaults to 1.0.
        specs: mapping. A full width table of the same types as `INCEPTION_V3_SPECS`.
            Defaults to `INCEPTION_V3_SPECS`.
        name: str. Model name. Defaults to "inception_v3".
        include_preprocessing: str or None. "inception" or "torch": the model takes raw
            pixels and normalizes them itself, as in `build_googlenet`. Defaults to None.

    Returns:
        A `keras.Model`.

    Examples:
    >>> model = build_inception_v3(input_shape=(32, 32, 3), stem="small", classes=10,
    ...                            width_multiplier=0.25, aux_logits=True)
    >>> sorted(model.output)
    ['aux', 'main']
    """
    check_aux_pool(aux_pool)
    return builder.build(
        ARCHITECTURE,
        **builder.common_arguments(locals()),
        style=ConvStyle(
            batch_norm=True,
            bn_scale=bool(bn_scale),
            sync_batch_norm=sync_batch_norm,
            fused_batch_norm=fused_batch_norm,
            bn_momentum=bn_momentum,
        ),
        body_options={
            "count_include_pad": bool(count_include_pad),
            "transform_input": bool(transform_input),
        },
        aux_options={**aux_head_v3_widths(width_multiplier, min_depth), "pool": aux_pool},
    )
