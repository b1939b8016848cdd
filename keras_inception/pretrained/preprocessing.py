"""Input preprocessing and class names for the pretrained weights of each source.

Like `keras.applications.*.preprocess_input` / `decode_predictions`: images are RGB,
channels-last, with values in [0, 255].
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops
from keras.applications import imagenet_utils

from keras_inception.pretrained.imagenet_classes import IMAGENET_CLASSES

# Each source's scaling is a mode of keras.applications' preprocess_input: "torch" is
# `(x / 255 - mean) / std` with ImageNet's mean and std, "tf" is `x / 127.5 - 1`.
MODES = {"torchvision": "torch", "slim": "tf"}
SOURCES = tuple(MODES)


def preprocess_input(x: Any, source: str) -> Any:
    """Scales RGB images in [0, 255] as the weights of `source` expect.

    `keras.applications.imagenet_utils.preprocess_input` in the mode of `source`, on a
    float32 copy (Keras's own scales float arrays in place):

    - "torchvision": mode "torch", `(x / 255 - mean) / std` per channel with ImageNet's
      mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), torchvision's
      `transforms.Normalize`. With torchvision's GoogLeNet and InceptionV3 weights,
      build the model with `transform_input=True` (as torchvision's
      `googlenet(weights=...)` does).
    - "slim": mode "tf", `x / 127.5 - 1`, in [-1, 1] (TF-Slim's
      `inception_preprocessing`). The torchvision weights with `transform_input=False`
      expect this too.

    Resizing and cropping are the caller's (torchvision: resize 256 / crop 224 for
    GoogLeNet, resize 342 / crop 299 for InceptionV3; TF-Slim: central crop 87.5%).

    Args:
        x: numpy array or tensor. Images `(..., height, width, 3)`, values in [0, 255].
        source: str. "torchvision" or "slim".

    Returns:
        float32 numpy array for a numpy (or list) input, else a tensor.

    Example:
    >>> preprocess_input(np.full((1, 2, 2, 3), 255.0), "slim")[0, 0, 0]
    array([1., 1., 1.], dtype=float32)
    """
    if source not in MODES:
        raise ValueError(f"source must be one of {list(SOURCES)}; received {source!r}")
    # np.array copies: Keras scales numpy inputs in place.
    x = ops.cast(x, "float32") if ops.is_tensor(x) else np.array(x, dtype="float32")
    if len(x.shape) < 1 or x.shape[-1] != 3:
        raise ValueError(
            f"preprocess_input needs RGB images (..., 3); received shape {tuple(x.shape)}"
        )
    return imagenet_utils.preprocess_input(x, data_format="channels_last", mode=MODES[source])


def class_names(classes: int = 1000) -> tuple[str, ...]:
    """ImageNet class names by output index: 1000 (torchvision), or 1001 with
    "background" at index 0 (TF-Slim).

    Example:
    >>> class_names()[0], class_names(1001)[1]
    ('tench', 'tench')
    """
    if classes == 1000:
        return IMAGENET_CLASSES
    if classes == 1001:
        return ("background", *IMAGENET_CLASSES)
    raise ValueError(
        f"ImageNet has 1000 classes (1001 with TF-Slim's background); received {classes!r}"
    )


def decode_predictions(preds: Any, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """The `top` classes of each prediction, as `(index, name, score)`, best first.

    Takes 1000 (torchvision) or 1001 (TF-Slim, background at 0) columns of logits or
    probabilities; scores are returned as given.

    Args:
        preds: array `(batch, 1000 | 1001)`.
        top: int. How many classes per row. Defaults to 5.

    Example:
    >>> decode_predictions(np.eye(1000)[[1]], top=1)
    [[(1, 'goldfish', 1.0)]]
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] not in (1000, 1001):
        raise ValueError(
            f"decode_predictions expects a batch of 1000 or 1001 scores (batch, classes); "
            f"received shape {preds.shape}"
        )
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= preds.shape[1]:
        raise ValueError(f"top must be an integer in [1, {preds.shape[1]}]; received {top!r}")
    names = class_names(preds.shape[1])
    results = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[:top]
        results.append([(int(i), names[i], float(row[i])) for i in best])
    return results
