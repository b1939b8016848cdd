"""GoogLeNet (Inception v1): Szegedy et al., "Going deeper with convolutions", CVPR 2015.

Reference: https://arxiv.org/abs/1409.4842 (Table 1 holds the widths below).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import keras

from keras_inception import builder
from keras_inception.blocks import StemLayer, apply_inception_v1, apply_max_pool, apply_stem
from keras_inception.heads import apply_aux_head_v1, check_aux_pool
from keras_inception.layers import ConvStyle, apply_transform_input
from keras_inception.specs import V1Module, V1Stem

# Paper Table 1. Keys are the module names of the paper; the first character is the stage.
GOOGLENET_SPECS: Mapping[str, V1Stem | V1Module] = MappingProxyType(
    {
        "stem": V1Stem(conv1=64, reduce=64, conv2=192),
        "3a": V1Module(conv1x1=64, reduce3x3=96, conv3x3=128, reduce5x5=16, conv5x5=32, pool_proj=32),
        "3b": V1Module(conv1x1=128, reduce3x3=128, conv3x3=192, reduce5x5=32, conv5x5=96, pool_proj=64),
        "4a": V1Module(conv1x1=192, reduce3x3=96, conv3x3=208, reduce5x5=16, conv5x5=48, pool_proj=64),
        "4b": V1Module(conv1x1=160, reduce3x3=112, conv3x3=224, reduce5x5=24, conv5x5=64, pool_proj=64),
        "4c": V1Module(conv1x1=128, reduce3x3=128, conv3x3=256, reduce5x5=24, conv5x5=64, pool_proj=64),
        "4d": V1Module(conv1x1=112, reduce3x3=144, conv3x3=288, reduce5x5=32, conv5x5=64, pool_proj=64),
        "4e": V1Module(conv1x1=256, reduce3x3=160, conv3x3=320, reduce5x5=32, conv5x5=128, pool_proj=128),
        "5a": V1Module(conv1x1=256, reduce3x3=160, conv3x3=320, reduce5x5=32, conv5x5=128, pool_proj=128),
        "5b": V1Module(conv1x1=384, reduce3x3=192, conv3x3=384, reduce5x5=48, conv5x5=128, pool_proj=128),
    }
)  # fmt: skip

# Auxiliary classifiers read the outputs of these modules (paper section 5).
AUX_TAPS: Mapping[str, str] = MappingProxyType({"4a": "aux1", "4d": "aux2"})

# Stems as data (`blocks.StemLayer`). Comments give the sizes at the default 224x224
# input. "imagenet": the paper's 7x7/2 conv and two 3x3/2 max pools (downsampling 8
# before module 3a); "small": the 3x3/1 conv, no downsampling (for 28-64 px inputs);
# "small_pool": the small stem and the ImageNet stem's pool2 (stage 3 at half the input
# side). The paper's local response normalizations ("lrn") apply without batch norm only.
GOOGLENET_STEM_LAYERS: Mapping[str, tuple[StemLayer, ...]] = MappingProxyType(
    {
        "imagenet": (
            StemLayer("conv1", "conv", 7, 2),  # 112x112x64
            StemLayer("pool1", "maxpool", 3, 2),  # 56x56x64
            StemLayer("norm1", "lrn"),
            StemLayer("conv2_3x3_reduce", "conv", 1, width="reduce"),
            StemLayer("conv2_3x3", "conv", 3, width="conv2"),  # 56x56x192
            StemLayer("norm2", "lrn"),
            StemLayer("pool2", "maxpool", 3, 2),  # 28x28x192
        ),
        "small": (
            StemLayer("conv1", "conv", 3),  # HxWx64
            StemLayer("norm1", "lrn"),
            StemLayer("conv2_3x3_reduce", "conv", 1, width="reduce"),
            StemLayer("conv2_3x3", "conv", 3, width="conv2"),
            StemLayer("norm2", "lrn"),
        ),
        "small_pool": (
            StemLayer("conv1", "conv", 3),
            StemLayer("norm1", "lrn"),
            StemLayer("conv2_3x3_reduce", "conv", 1, width="reduce"),
            StemLayer("conv2_3x3", "conv", 3, width="conv2"),
            StemLayer("norm2", "lrn"),
            StemLayer("pool2", "maxpool", 3, 2),  # H/2xW/2x192
        ),
    }
)

# Stages 4 and 5 each start after a 3x3/2 max pool, so the auxiliary heads (stage 4)
# read maps at twice the stem's stride.
_STEM_STRIDES = MappingProxyType(builder.stem_strides(GOOGLENET_STEM_LAYERS))
_AUX_STRIDES = MappingProxyType({stem: 2 * s for stem, s in _STEM_STRIDES.items()})

# Feature maps of `feature_model`: the last module of each stage (strides 8, 16, 32).
FEATURE_TAPS = builder.module_taps("inception", {"3b": 1, "4e": 2, "5b": 4})

# How GoogLeNet pads its stride-2 layers: the ImageNet stem's 7x7/2 conv1 and the max
# pools.
PADDINGS = ("same", "torch")


def torch_padded(stem_layers: tuple[StemLayer, ...]) -> tuple[StemLayer, ...]:
    """The stem with every stride-2 layer padded as torch pads it (`padding="torch"`):
    conv1 by 3 on each side where "same" pads 2 and 3 at 224, max pools in `ceil_mode`."""
    return tuple(
        layer._replace(padding="torch") if layer.strides == 2 else layer for layer in stem_layers
    )


def _body(
    x,
    table: Mapping[str, Any],
    *,
    stem: str,
    style: ConvStyle,
    branch5x5_kernel: int,
    padding: str = "same",
    pool5_kernel: int = 3,
    transform_input: bool = False,
):
    if transform_input:
        x = apply_transform_input(x)
    stem_layers = GOOGLENET_STEM_LAYERS[stem]
    if padding == "torch":
        stem_layers = torch_padded(stem_layers)
    x = apply_stem(x, table["stem"], stem_layers, style=style)  # 28x28x192
    taps = {}
    modules = [key for key in table if key != "stem"]
    # Stages 3 (28x28), 4 (14x14), 5 (7x7); a 3x3/2 max pool starts stages 4 and 5
    # (2x2/2 before stage 5 with pool5_kernel=2, as TF-Slim and torchvision).
    for index, (stage, keys) in enumerate(itertools.groupby(modules, key=lambda k: k[0])):
        if index > 0:
            kernel = pool5_kernel if stage == "5" else 3
            x = apply_max_pool(x, kernel, strides=2, padding=padding, name=f"pool{stage}")
        for key in keys:
            x = apply_inception_v1(
                x,
                table[key],
                style=style,
                branch5x5_kernel=branch5x5_kernel,
                name=f"inception{key}",
            )
            if key in AUX_TAPS:
                taps[AUX_TAPS[key]] = x
    return x, taps  # 7x7x1024


ARCHITECTURE = builder.Architecture(
    family="googlenet",
    default_size=224,
    default_specs=GOOGLENET_SPECS,
    stems=tuple(_STEM_STRIDES),
    minimum_size=builder.same_padding_minimum_size(_STEM_STRIDES, _AUX_STRIDES),
    body=_body,
    aux_head=apply_aux_head_v1,
    feature_taps=FEATURE_TAPS,
    stem_strides=_STEM_STRIDES,
)


def build_googlenet(
    *,
    include_top: bool = True,
    weights: str | None = None,
    input_tensor: Any = None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    aux_logits: bool = False,
    aux_dropout: float = 0.7,
    batch_norm: bool = True,
    sync_batch_norm: bool = False,
    fused_batch_norm: bool = True,
    bn_momentum: float = 0.99,
    branch5x5_kernel: int = 5,
    padding: str = "same",
    pool5_kernel: int = 3,
    aux_pool: str = "uniform",
    transform_input: bool = False,
    dropout: float = 0.4,
    stem: str = "imagenet",
    width_multiplier: float = 1.0,
    min_depth: int = 16,
    bottleneck_ratio: float = 1.0,
    specs: Mapping[str, V1Stem | V1Module] | None = None,
    name: str = "googlenet",
    include_preprocessing: str | None = None,
) -> keras.Model:
    """GoogLeNet (Inception v1), in the conventions of `keras.applications`.

    Reference: Szegedy et al., "Going deeper with convolutions" (CVPR 2015).

    `build_googlenet(batch_norm=False)` is the paper's network (6,998,552 parameters,
    1.58 G multiply-adds at 224x224); `build_googlenet(branch5x5_kernel=3)` is the
    TF-Slim/torchvision layout (batch norm, one 3x3 conv in the "5x5" branch).
    torchvision's `GoogLeNet`, output for output at every input size, is
    `build_googlenet(branch5x5_kernel=3, padding="torch", pool5_kernel=2,
    aux_pool="torch", dropout=0.2)` (see `keras_inception.from_torchvision`); TF-Slim's
    `inception_v1` is `build_googlenet(branch5x5_kernel=3, pool5_kernel=2)` (see
    `keras_inception.from_slim`).
    Known deviations from the paper: the final 7x7 average pool is global (any input
    size), max pools pad "same" (sizes equal the paper's at 224), and the auxiliary pool
    adapts its window so that its map stays 4x4 at any input size (5x5/3 at 224).

    Args:
        include_top: bool. Include the dropout and classifier on top. Defaults to True.
        weights: str or None. None (random init) or a path to a file written by
            `model.save_weights`, e.g. one that `python -m keras_inception.convert`
            wrote from torchvision's ImageNet weights (it prints the matching call).
            Nothing is downloaded, so `"imagenet"` raises a ValueError. Defaults to
            None.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: tuple. `(height, width, channels)`, any channel count. Defaults to
            `(224, 224, 3)` with the top, `(None, None, 3)` without.
        pooling: None, "avg" or "max". Global pooling of the features when
            `include_top=False`. Defaults to None (the 4D feature map).
        classes: int. Number of classes. Defaults to 1000.
        classifier_activation: str or None. Activation of every classifier output; None
            returns logits. Defaults to "softmax".
        aux_logits: bool. Add the two auxiliary classifiers (after 4a and 4d); the model
            then returns `{"main", "aux1", "aux2"}`. Train with
            `loss_weights=keras_inception.default_loss_weights(model)` and drop them with
            `keras_inception.strip_aux_heads(model)`. Defaults to False.
        aux_dropout: float. Dropout in the auxiliary heads. Defaults to 0.7 (paper).
        batch_norm: bool. BN after every conv, no conv bias. False is the paper: conv
            bias and local response normalization in the stem. Defaults to True.
        sync_batch_norm: bool. Synchronized BN across replicas. Defaults to False.
        fused_batch_norm: bool. Batch norm on TensorFlow's fused kernel
            (`FusedBatchNormalization`: same weights and numbers, faster training; Keras's
            own computation on other backends). False: `keras.layers.BatchNormalization`.
            Defaults to True.
        bn_momentum: float. Momentum of the BN moving mean and variance (Keras's:
            `moving = momentum * moving + (1 - momentum) * batch`). Lower it when an
            epoch has few steps. Defaults to 0.99.
        branch5x5_kernel: int. 5 (paper) or 3 (TF-Slim/torchvision). Defaults to 5.
        padding: str. Padding of the ImageNet stem's 7x7/2 conv and of the stride-2 max
            pools. "same" is Keras's (conv1 pads 2 and 3 at 224). "torch" is
            torchvision's: conv1 pads 3 on each side, max pools in `ceil_mode`
            (different from "same" at odd map sizes, e.g. a 227x227 input). The
            inception modules' 3x3/1 pools are the same either way. Defaults to "same".
        pool5_kernel: int. Window of the stride-2 max pool before stage 5: 3 (paper) or
            2 (TF-Slim's MaxPool_5a_2x2, torchvision's maxpool4). Defaults to 3.
        aux_pool: str. Pooling of the auxiliary heads: "uniform" (one window and
            stride, the paper's 5x5/3 at 224) or "torch" (torchvision's
            `adaptive_avg_pool2d` bins to 4x4). Defaults to "uniform".
        transform_input: bool. Start with torchvision's `transform_input` (a
            `Rescaling` layer): inputs normalized with ImageNet's mean and std become
            the [-1, 1] inputs of Google's weights. Needs 3 channels. Defaults to False.
        dropout: float. Dropout before the classifier. Defaults to 0.4 (paper).
        stem: str. "imagenet" (7x7/2 conv and two 3x3/2 max pools), "small" (3x3/1
            conv, no downsampling: for 28-64 px inputs) or "small_pool" (the small stem,
            then the ImageNet stem's 3x3/2 max pool "pool2": stage 3 at half the input
            side, about a quarter of the small stem's multiply-adds; for 28x28 images).
            Defaults to "imagenet".
        width_multiplier: float. Scales every conv width as TF-Slim's depth_multiplier:
            `max(int(w * width_multiplier), min_depth)`. Defaults to 1.0.
        min_depth: int. Smallest scaled width. Defaults to 16.
        bottleneck_ratio: float. Further scales only the 1x1 reduce convs in front of
            the 3x3 and 5x5 convs of each module; module outputs are unchanged.
            Defaults to 1.0.
        specs: mapping. A full width table of the same type as `GOOGLENET_SPECS`.
            Defaults to `GOOGLENET_SPECS`.
        name: str. Model name. Defaults to "googlenet".
        include_preprocessing: str or None. Put the input normalization inside the
            model (a "preprocessing" `Rescaling` layer, as keras.applications'
            EfficientNetV2): the model then takes raw pixels in [0, 255], uint8 or float.
            "inception": `x / 127.5 - 1` (ours, TF-Slim, keras.applications); "torch":
            ImageNet's mean and std, torchvision's (RGB; before `transform_input`, as
            torchvision). None: the caller scales the inputs. Defaults to None.

    Returns:
        A `keras.Model`.

    Examples:
    >>> model = build_googlenet(input_shape=(28, 28, 1), stem="small", classes=10,
    ...                         width_multiplier=0.25)
    >>> model.output.shape
    (None, 10)
    """
    if branch5x5_kernel not in (3, 5):
        raise ValueError(f"branch5x5_kernel must be 3 or 5; received {branch5x5_kernel!r}")
    if not (isinstance(aux_dropout, int | float) and 0 <= aux_dropout < 1):
        raise ValueError(f"aux_dropout must be in [0, 1); received {aux_dropout!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {list(PADDINGS)}; received {padding!r}")
    if pool5_kernel not in (2, 3):
        raise ValueError(f"pool5_kernel must be 2 or 3; received {pool5_kernel!r}")
    check_aux_pool(aux_pool)
    return builder.build(
        ARCHITECTURE,
        **builder.common_arguments(locals()),
        style=ConvStyle(
            batch_norm=batch_norm,
            sync_batch_norm=sync_batch_norm,
            fused_batch_norm=fused_batch_norm,
            bn_momentum=bn_momentum,
        ),
        body_options={
            "branch5x5_kernel": branch5x5_kernel,
            "padding": padding,
            "pool5_kernel": pool5_kernel,
            "transform_input": bool(transform_input),
        },
        aux_options={"dropout": aux_dropout, "pool": aux_pool},
    )
