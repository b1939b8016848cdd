"""Classifier head and auxiliary heads."""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

from keras_inception.layers import ConvStyle, conv_bn_act
from keras_inception.specs import scale_width


def output_dtype() -> str | None:
    """float32 for the final layers under a mixed-precision policy, else the policy's own."""
    policy = keras.config.dtype_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else None


def apply_classifier(
    x,
    *,
    classes: int,
    dropout: float,
    classifier_activation: str | None,
    name: str,
):
    """Global average pool -> dropout -> dense `classes` (layer named `name`)."""
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    return layers.Dense(classes, activation=classifier_activation, dtype=output_dtype(), name=name)(
        x
    )


def apply_adaptive_average_pool(x, output_size: int, *, name: str):
    """Average pooling whose window and stride give an `output_size` square map.

    For a side of `n`, stride `n // output_size` and window `n - (output_size - 1) * stride`
    (valid padding): at GoogLeNet's 14x14 aux taps this is exactly the paper's 5x5/3 pool,
    and at any other (static) size the map stays `output_size` square, so the dense layer
    that follows never changes size.
    """
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError(
            f"{name}: auxiliary heads need a static input size; received feature map "
            f"{tuple(x.shape)}. Pass a fixed input_shape."
        )
    if height < output_size or width < output_size:
        raise ValueError(
            f"{name}: the feature map {height}x{width} is smaller than the {output_size}x"
            f"{output_size} map the auxiliary head pools to; use a larger input_shape"
        )
    strides = (height // output_size, width // output_size)
    pool = (height - (output_size - 1) * strides[0], width - (output_size - 1) * strides[1])
    return layers.AveragePooling2D(pool, strides=strides, padding="valid", name=name)(x)


# How an auxiliary head pools its input: "uniform" (one window and stride, the paper's
# pool at the default size) or "torch" (torchvision's heads, exactly).
AUX_POOLS = ("uniform", "torch")


def check_aux_pool(aux_pool: str) -> None:
    """ValueError naming `aux_pool` unless it is one of `AUX_POOLS`."""
    if aux_pool not in AUX_POOLS:
        raise ValueError(f"aux_pool must be one of {list(AUX_POOLS)}; received {aux_pool!r}")


def apply_aux_head_v1(
    x,
    *,
    classes: int,
    style: ConvStyle,
    dropout: float,
    classifier_activation: str | None,
    name: str,
    pool: str = "uniform",
):
    """GoogLeNet's auxiliary classifier (paper section 5).

    5x5/3 average pool (adaptive: always 4x4) -> 1x1 conv 128 + ReLU -> FC 1024 + ReLU ->
    dropout (paper 70%) -> FC `classes`. Its conv follows the network's `style` (batch norm
    in the torchvision layout). The last layer is named `name`.

    `pool="torch"` pools as torchvision's `F.adaptive_avg_pool2d(x, (4, 4))`: at 14x14
    four overlapping 4x4 bins per axis (starts 0, 3, 7, 10) instead of 5x5/3. The FC
    layer flattens channels-last (torch flattens channels-first): converting torch
    weights permutes the rows of `fc1` (`keras_inception.pretrained.torchvision`).
    """
    if pool == "torch":
        x = layers.AdaptiveAveragePooling2D(4, data_format="channels_last", name=f"{name}_pool")(x)
    else:
        x = apply_adaptive_average_pool(x, 4, name=f"{name}_pool")
    x = conv_bn_act(x, 128, 1, style=style, name=f"{name}_1x1")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return layers.Dense(classes, activation=classifier_activation, dtype=output_dtype(), name=name)(
        x
    )


def apply_aux_head_v3(
    x,
    *,
    classes: int,
    style: ConvStyle,
    classifier_activation: str | None,
    name: str,
    batch_norm: bool | None = None,
    conv1x1: int = 128,
    conv5x5: int = 768,
    pool: str = "uniform",
):
    """The auxiliary classifier of "Rethinking the Inception Architecture" (Figure 8).

    5x5/3 average pool (adaptive: always 5x5) -> 1x1 conv `conv1x1` (128) -> 5x5 conv
    `conv5x5` (768; valid, so 1x1) -> flatten -> dense `classes`. The builders scale the
    two widths with `width_multiplier` / `min_depth`, as TF-Slim's `depth()` does. The convolutions follow `style` (InceptionV3:
    batch norm without scale, the "BN-auxiliary" of the paper); `batch_norm=False`
    gives the Inception-v2 head (conv bias, no batch norm). The last layer is named `name`.

    Known deviation: TF-Slim shrinks the 5x5 kernels for small maps; here the pool adapts
    its window so that the map stays 5x5 (exactly 5x5/3 at 17x17), and the head's shapes
    never change with the input size.

    `pool="torch"` is torchvision's `InceptionAux`: a fixed 5x5/3 average pool (the map
    grows with the input), the two convolutions, then a global average pool (torch's
    `adaptive_avg_pool2d(x, (1, 1))`). It needs a map of at least 17x17 (input 299x299
    for InceptionV3); at 17x17 both pools give the same outputs.
    """
    if batch_norm is not None and batch_norm != style.batch_norm:
        style = dataclasses.replace(style, batch_norm=batch_norm)
    if pool == "torch":
        height, width = x.shape[1], x.shape[2]
        if height is None or width is None or min(height, width) < 17:
            raise ValueError(
                f"{name}: the torchvision auxiliary head (5x5/3 pool, 5x5 conv) needs a "
                f"feature map of at least 17x17; received {tuple(x.shape[1:])}. Use a "
                "larger input_shape (InceptionV3: at least 299x299)."
            )
        x = layers.AveragePooling2D(5, strides=3, padding="valid", name=f"{name}_pool")(x)
    else:
        x = apply_adaptive_average_pool(x, 5, name=f"{name}_pool")
    x = conv_bn_act(x, conv1x1, 1, style=style, name=f"{name}_1x1")
    x = conv_bn_act(x, conv5x5, 5, padding="valid", style=style, name=f"{name}_5x5")
    if pool == "torch":
        x = layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
    else:
        x = layers.Flatten(name=f"{name}_flatten")(x)
    return layers.Dense(classes, activation=classifier_activation, dtype=output_dtype(), name=name)(
        x
    )


# Loss weight of each auxiliary output, by output name: GoogLeNet's paper (0.3 each) and
# TF-Slim's InceptionV3 (0.4).
AUX_LOSS_WEIGHTS = {"aux1": 0.3, "aux2": 0.3, "aux": 0.4}


def _output_dict(model: keras.Model) -> dict | None:
    outputs = model.output
    return outputs if isinstance(outputs, dict) else None


def default_loss_weights(model: keras.Model) -> dict[str, float]:
    """`compile(loss_weights=...)` for a model with auxiliary outputs.

    Example:
    >>> model = build_googlenet(aux_logits=True, stem="small", input_shape=(8, 8, 1),
    ...                         width_multiplier=0.125)
    >>> default_loss_weights(model)
    {'main': 1.0, 'aux1': 0.3, 'aux2': 0.3}
    """
    outputs = _output_dict(model)
    if outputs is None:
        return {model.output_names[0]: 1.0} if model.output_names else {}
    unknown = [key for key in outputs if key != "main" and key not in AUX_LOSS_WEIGHTS]
    if "main" not in outputs or unknown:
        raise ValueError(
            "default_loss_weights expects outputs 'main' and auxiliary outputs "
            f"{sorted(AUX_LOSS_WEIGHTS)}; received outputs {sorted(outputs)}"
        )
    return {key: 1.0 if key == "main" else AUX_LOSS_WEIGHTS[key] for key in outputs}


def strip_aux_heads(model: keras.Model) -> keras.Model:
    """The single-output inference model: the `"main"` output, sharing the same weights.

    A model without auxiliary outputs is returned as it is.

    Example:
    >>> model = build_googlenet(aux_logits=True, stem="small", input_shape=(8, 8, 1),
    ...                         width_multiplier=0.125, classes=3)
    >>> tuple(strip_aux_heads(model).output.shape)
    (None, 3)
    """
    outputs = _output_dict(model)
    if outputs is None:
        return model
    if "main" not in outputs:
        raise ValueError(
            f"strip_aux_heads needs a model with a 'main' output; received outputs {sorted(outputs)}"
        )
    inference = keras.Model(model.input, outputs["main"], name=model.name)
    if hasattr(model, "feature_info"):  # the same body: the same feature maps
        inference.feature_info = model.feature_info
    return inference


def aux_head_v3_widths(width_multiplier: float, min_depth: int) -> dict[str, int]:
    """The auxiliary head's widths after the width controls (TF-Slim `depth(128)`,
    `depth(768)`)."""
    return {
        "conv1x1": scale_width(128, width_multiplier, min_depth),
        "conv5x5": scale_width(768, width_multiplier, min_depth),
    }
