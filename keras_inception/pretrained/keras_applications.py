"""keras.applications.InceptionV3's weights in `build_inception_v3`, by name.

`build_inception_v3(weights=...)` loads `"imagenet"` (Keras's own file, through Keras's
cache), a weights file of `keras.applications.InceptionV3` (legacy `.h5` or
`.weights.h5`, with or without the top) or a file of the model's own `save_weights`.

A keras.applications file is read by Keras itself into a freshly built
`keras.applications.InceptionV3`, whose layers keras.applications leaves auto-named in
the order it creates them (`conv2d`, `conv2d_1`, ...; `batch_normalization`, ...). That
order is its source's: the stem, then each module branch by branch in concatenation
order, as `INCEPTION_V3_ORDER` lists our layer names. The state dict is keyed
`conv2d_<i>/kernel`, `batch_normalization_<i>/beta` etc. with `i` that order, and
`KerasApplications` (a `keras_inception.pretrained.converter.Converter`) assigns it by
name, strictly. Layers the file does not have (the auxiliary head; the classifier, from
a file without the top) keep their initialization.
"""

from __future__ import annotations

import os
import re
import warnings
from types import MappingProxyType

import keras
import numpy as np

from keras_inception.pretrained.common import Source, one_line
from keras_inception.pretrained.converter import Converter, batch_norm_names

KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
IMAGENET_FILES = MappingProxyType(
    {
        True: (
            "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
            "9a0d58056eeedaa3f26cb7ebd46da564",
        ),
        False: (
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "bcbd6486424b2319ff4ef7d526e38f63",
        ),
    }
)

# keras.applications' conv2d_bn calls, in its source's order: our conv/BN block names.
_STEM = ("conv1a", "conv2a", "conv2b", "conv3b", "conv4a")
_MODULES = (
    (("5b", "5c", "5d"), ("1x1", "5x5_reduce", "5x5", "3x3dbl_reduce", "3x3dbl_1", "3x3dbl_2", "pool_proj")),
    (("6a",), ("3x3", "3x3dbl_reduce", "3x3dbl_1", "3x3dbl_2")),
    (("6b", "6c", "6d", "6e"), ("1x1", "7x7_reduce", "7x7_1", "7x7_2", "7x7dbl_reduce", "7x7dbl_1", "7x7dbl_2", "7x7dbl_3", "7x7dbl_4", "pool_proj")),
    (("7a",), ("3x3_reduce", "3x3", "7x7x3_reduce", "7x7x3_1", "7x7x3_2", "7x7x3_3")),
    (("7b", "7c"), ("1x1", "3x3_reduce", "3x3_1x3", "3x3_3x1", "3x3dbl_reduce", "3x3dbl_1", "3x3dbl_1x3", "3x3dbl_3x1", "pool_proj")),
)  # fmt: skip
INCEPTION_V3_ORDER: tuple[str, ...] = _STEM + tuple(
    f"mixed{key}_{part}" for keys, parts in _MODULES for key in keys for part in parts
)
_INDEX = MappingProxyType({layer: i for i, layer in enumerate(INCEPTION_V3_ORDER)})
_AUTO_NAME = re.compile(r"(conv2d|batch_normalization)(?:_(\d+))?")


def fetch_imagenet(include_top: bool) -> str:
    """The path of keras.applications' ImageNet file, fetched into Keras's cache."""
    filename, file_hash = IMAGENET_FILES[include_top]
    try:
        return keras.utils.get_file(
            filename, KERAS_WEIGHTS + filename, cache_subdir="models", file_hash=file_hash
        )
    except Exception as err:  # get_file raises plain Exceptions on network errors
        raise RuntimeError(
            f"could not fetch the ImageNet weights of keras.applications.InceptionV3 "
            f"({KERAS_WEIGHTS + filename}) into Keras's cache: {err}. When offline, put the "
            "file in ~/.keras/models/ or pass weights=<path to the file>."
        ) from err


def _load_strict(model: keras.Model, path: str) -> None:
    """`model.load_weights(path)`, but a file that leaves any variable unloaded fails
    (Keras only warns for `.weights.h5` files whose layers do not match)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.load_weights(path)


def file_classes(path: str) -> int | None:
    """Columns of the classifier kernel of a keras.applications weights file (legacy
    `.h5`: its last layer; `.weights.h5`: its `dense` layer), or None without one."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "layers" in f:  # Keras 3 .weights.h5
                kernel = f["layers"]["dense"]["vars"]["0"]
            else:
                group = f.get("model_weights", f)
                last = group[group.attrs["layer_names"][-1]]
                kernel = last[last.attrs["weight_names"][0]]
            return int(kernel.shape[-1]) if len(kernel.shape) == 2 else None
    except Exception:  # noqa: BLE001 - no classifier (or no h5 file): the caller tries without
        return None


def _creation_order(layer: keras.layers.Layer) -> int:
    match = _AUTO_NAME.fullmatch(layer.name)
    if match is None:
        raise ValueError(f"keras.applications layer {layer.name!r} is not auto-named")
    return int(match.group(2) or 0)


def reference_state(reference: keras.Model) -> dict[str, np.ndarray]:
    """The weights of a `keras.applications.InceptionV3`, keyed by creation order:
    `conv2d_<i>/kernel`, `batch_normalization_<i>/<beta|moving_mean|...>`,
    `predictions/<kernel|bias>`."""
    state = {}
    for kind, prefix in (
        (keras.layers.Conv2D, "conv2d"),
        (keras.layers.BatchNormalization, "batch_normalization"),
    ):
        found = sorted((x for x in reference.layers if isinstance(x, kind)), key=_creation_order)
        for i, layer in enumerate(found):
            state.update({f"{prefix}_{i}/{w.name}": np.asarray(w) for w in layer.weights})
    for layer in reference.layers:
        if isinstance(layer, keras.layers.Dense):
            state.update({f"predictions/{w.name}": np.asarray(w) for w in layer.weights})
    return state


class KerasApplications(Converter):
    """`keras.applications.InceptionV3` weight files, read by Keras (`read`).

    They load through `build_inception_v3(weights=...)` (`load_weights`), so this
    source has no builders of its own.

    Examples:
    >>> CONVERTER.scope("inception_v3", "mixed5b_5x5"), CONVERTER.scope("inception_v3", "aux_1x1")
    ('7', None)
    """

    label = "keras.applications"
    file_kind = "weights file"
    markers = MappingProxyType({"inception_v3": "conv2d_93/"})
    classifier_prefixes = MappingProxyType({"inception_v3": ("predictions/",)})
    classifier_key = MappingProxyType({"inception_v3": "predictions/kernel"})
    classes_axis = -1
    tensor_names = MappingProxyType(
        {
            "conv": {"kernel": "conv2d_{}/kernel"},
            "batch_norm": batch_norm_names("batch_normalization_{}/"),
            "dense": {"kernel": "{}/kernel", "bias": "{}/bias"},
        }
    )

    def read(self, path: str, *, channels: int = 3) -> dict[str, np.ndarray]:
        """Loads the file into a `keras.applications.InceptionV3` (with the top, with
        the file's classes, if it has a classifier; else without) and returns its
        `reference_state`."""
        classes = file_classes(path)
        candidates = ([(True, classes)] if classes else []) + [(False, None)]
        errors = []
        for top, count in candidates:
            reference = keras.applications.InceptionV3(
                include_top=top,
                weights=None,
                input_shape=(75, 75, channels),
                classes=count or 1000,
                classifier_activation=None,
            )
            try:
                _load_strict(reference, path)
            except Exception as err:  # noqa: BLE001 - every failure is reported below
                errors.append(f"include_top={top}: {one_line(err)}")
                continue
            return reference_state(reference)
        raise ValueError(
            f"{path!r} is not a keras.applications.InceptionV3 weights file ("
            + "; ".join(errors)
            + ")"
        )

    def scope(self, name: str, layer_name: str) -> str | None:
        if layer_name in ("main", "predictions"):
            return "predictions"
        if layer_name in _INDEX:
            return str(_INDEX[layer_name])
        if layer_name.partition("_")[0] == "aux":
            return None  # keras.applications has no auxiliary head
        raise ValueError(
            f"Keras layer {layer_name!r} has no counterpart in keras.applications.InceptionV3"
        )

    def source(self, name: str, layer, attribute: str, key: str, **options) -> Source:
        # A file without the top leaves the classifier as initialized.
        return Source(key, keep=isinstance(layer, keras.layers.Dense))


CONVERTER = KerasApplications()


def load_weights(model: keras.Model, weights: str | os.PathLike, include_top: bool) -> None:
    """`Architecture.load_weights` for InceptionV3 (see the module docstring).

    Args:
        model: keras.Model. A `build_inception_v3` model.
        weights: str or PathLike. `"imagenet"` or a path to a weights file.
        include_top: bool. Whether `model` has the classifier.

    Raises:
        ValueError: for `"imagenet"` with other than 1000 classes or 3 channels, or a
            file that is neither keras.applications' nor this model's (naming both
            reasons), or one whose tensors do not fit.
        RuntimeError: when the ImageNet file cannot be fetched.

    Examples:
    >>> from keras_inception import build_inception_v3
    >>> model = build_inception_v3(weights="inception_v3.weights.h5")  # doctest: +SKIP
    """
    outputs = model.output
    main = outputs["main"] if isinstance(outputs, dict) else outputs
    channels = model.input.shape[-1]
    if weights == "imagenet":
        if include_top and main.shape[-1] != 1000:
            raise ValueError(
                "weights='imagenet' with include_top=True needs classes=1000; "
                f"received {main.shape[-1]}"
            )
        if channels != 3:
            raise ValueError(
                f"weights='imagenet' needs 3 input channels; received input shape "
                f"{tuple(model.input.shape[1:])}"
            )
        path = fetch_imagenet(include_top)
    else:
        path = os.fspath(weights)
    try:
        state = CONVERTER.read(path, channels=channels)
    except ValueError as err:
        try:
            _load_strict(model, path)
            return
        except Exception as own:  # noqa: BLE001 - both reasons are reported
            raise ValueError(
                f"could not load weights {path!r} into {model.name}: {err}; as this "
                f"model's own weights: {one_line(own)}"
            ) from None
    CONVERTER.fill("inception_v3", model, state, path=path, include_top=include_top)
