"""The input normalization inside a model: raw pixels in, the weights' own scale applied by
one plain Keras layer named "preprocessing" (keras.applications' EfficientNetV2
`include_preprocessing` convention).

Modes (`PREPROCESSING_MODES`):

- "inception": `x / 127.5 - 1`, pixels to [-1, 1]: ours, TF-Slim's and keras.applications'
  Inception weights (`preprocess_input(x, "slim")`).
- "torch": `(x / 255 - mean) / std` per channel with ImageNet's mean and std:
  torchvision's (`preprocess_input(x, "torchvision")`); RGB only. With torchvision's
  `transform_input`, that layer follows this one, in torchvision's order.

Both are one `keras.layers.Rescaling` (per-channel scale and offset for "torch"): no
weights, so weight files and converters that match layers by name are unchanged, and
`.keras` files load in plain Keras with `safe_mode=True`.
"""

from __future__ import annotations

import keras
from keras import layers

from keras_inception.layers import IMAGENET_MEAN, IMAGENET_STD

PREPROCESSING_MODES = ("inception", "torch")
PREPROCESSING_LAYER = "preprocessing"


def check_preprocessing(mode: str | None) -> None:
    """Raises ValueError unless `mode` is None or one of `PREPROCESSING_MODES`."""
    if mode is not None and mode not in PREPROCESSING_MODES:
        raise ValueError(
            f"include_preprocessing must be None or one of {list(PREPROCESSING_MODES)}; "
            f"received {mode!r}"
        )


def preprocessing_layer(mode: str, channels: int) -> layers.Rescaling:
    """The `Rescaling` layer of `mode` for images of `channels` channels.

    Args:
        mode: str. "inception" or "torch".
        channels: int. The input's channel count ("torch" needs 3).

    Raises:
        ValueError: an unknown mode, or "torch" for other than 3 channels.

    Example:
    >>> layer = preprocessing_layer("inception", 1)
    >>> float(layer(keras.ops.convert_to_tensor([[255.0]]))[0, 0])
    1.0
    """
    check_preprocessing(mode)
    if mode == "inception":
        return layers.Rescaling(1 / 127.5, offset=-1.0, name=PREPROCESSING_LAYER)
    if channels != 3:
        raise ValueError(
            f'include_preprocessing="torch" normalizes RGB images (3 channels); received '
            f"{channels} channels"
        )
    scale = [1 / (255 * s) for s in IMAGENET_STD]
    offset = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    return layers.Rescaling(scale, offset=offset, name=PREPROCESSING_LAYER)


def apply_preprocessing(x, mode: str | None):
    """`x` through the preprocessing layer of `mode` (None: `x` unchanged)."""
    if mode is None:
        return x
    return preprocessing_layer(mode, x.shape[-1])(x)


def preprocessing_of(model: keras.Model) -> str | None:
    """The mode of `model`'s preprocessing layer, None when it has none (a model built
    without `include_preprocessing`, e.g. a file saved before it existed).

    Example:
    >>> inputs = keras.Input((4, 4, 3))
    >>> model = keras.Model(inputs, apply_preprocessing(inputs, "torch"))
    >>> preprocessing_of(model)
    'torch'
    """
    try:
        layer = model.get_layer(PREPROCESSING_LAYER)
    except ValueError:
        return None
    if not isinstance(layer, layers.Rescaling):
        return None
    return "torch" if isinstance(layer.scale, list | tuple) else "inception"


def with_preprocessing(model: keras.Model, mode: str = "inception") -> keras.Model:
    """`model` itself when it has a preprocessing layer, else a model that applies `mode`'s
    layer and then `model` (same weights): one that takes raw pixels.

    For files saved before models carried their preprocessing (inputs scaled to [-1, 1]
    by the caller: `mode="inception"`).

    Example:
    >>> inputs = keras.Input((4, 4, 1))
    >>> old = keras.Model(inputs, keras.layers.Flatten()(inputs))
    >>> preprocessing_of(with_preprocessing(old))
    'inception'
    """
    check_preprocessing(mode)
    if preprocessing_of(model) is not None:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    outputs = model(apply_preprocessing(inputs, mode))
    return keras.Model(inputs, outputs, name=model.name)
