"""torchvision's GoogLeNet and InceptionV3 weights in Keras, output for output.

torchvision publishes Google's ImageNet weights of both networks:

| name | file | ImageNet top-1 (torchvision) |
|---|---|---|
| googlenet | https://download.pytorch.org/models/googlenet-1378be20.pth | 69.778% |
| inception_v3 | https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth | 77.294% |

`from_torchvision(name, path)` builds the matching Keras model (`builder_kwargs`) and
assigns the state dict strictly (`keras_inception.pretrained.common.assign`). The
model's outputs equal those of the torchvision model in eval mode on the same images
(NHWC here, NCHW there).

Layouts: conv kernels `(out, in, kh, kw)` become `(kh, kw, in, out)`, dense kernels are
transposed, BatchNorm2d's weight/bias/running_mean/running_var become gamma/beta/
moving_mean/moving_variance (epsilon 1e-3 on both sides). GoogLeNet's auxiliary `fc1`
reads a channels-first flatten in torch and a channels-last one here: its input rows
are permuted, so the Keras model stays a plain graph.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from keras_inception.pretrained.common import (
    Source,
    assign,
    conv_kernel,
    dense_kernel,
    read_state_dict,
)

MODELS = ("googlenet", "inception_v3")

# One tensor that only each network's state dict holds.
MARKERS = {
    "googlenet": "inception3a.branch1.conv.weight",
    "inception_v3": "Mixed_5b.branch1x1.conv.weight",
}

# Prefix of the auxiliary heads' tensors.
AUX_PREFIXES = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}

# The builder options that make each Keras builder torchvision's network.
TORCHVISION_OPTIONS: Mapping[str, Mapping[str, Any]] = {
    "googlenet": {
        "branch5x5_kernel": 3,
        "padding": "torch",
        "pool5_kernel": 2,
        "aux_pool": "torch",
        "dropout": 0.2,
    },
    "inception_v3": {
        "bn_scale": True,
        "count_include_pad": True,
        "aux_pool": "torch",
        "dropout": 0.5,
    },
}

BUILDERS = {"googlenet": "build_googlenet", "inception_v3": "build_inception_v3"}

# Keras layer name (stem) or module part -> torch module path.
_GOOGLENET_STEM = {"conv1": "conv1", "conv2_3x3_reduce": "conv2", "conv2_3x3": "conv3"}
_GOOGLENET_PARTS = {
    "1x1": "branch1",
    "3x3_reduce": "branch2.0",
    "3x3": "branch2.1",
    "5x5_reduce": "branch3.0",
    "5x5": "branch3.1",
    "pool_proj": "branch4.1",
}
_GOOGLENET_AUX_PARTS = {"1x1": "conv", "fc": "fc1", "": "fc2"}

_V3_STEM = {
    "conv1a": "Conv2d_1a_3x3",
    "conv2a": "Conv2d_2a_3x3",
    "conv2b": "Conv2d_2b_3x3",
    "conv3b": "Conv2d_3b_1x1",
    "conv4a": "Conv2d_4a_3x3",
}
_V3_PARTS = {
    # 35x35 modules (Mixed_5b-5d)
    "1x1": "branch1x1",
    "5x5_reduce": "branch5x5_1",
    "5x5": "branch5x5_2",
    "3x3dbl_reduce": "branch3x3dbl_1",
    "3x3dbl_1": "branch3x3dbl_2",
    "3x3dbl_2": "branch3x3dbl_3",
    "pool_proj": "branch_pool",
    # 17x17 modules (Mixed_6b-6e)
    "7x7_reduce": "branch7x7_1",
    "7x7_1": "branch7x7_2",
    "7x7_2": "branch7x7_3",
    "7x7dbl_reduce": "branch7x7dbl_1",
    "7x7dbl_1": "branch7x7dbl_2",
    "7x7dbl_2": "branch7x7dbl_3",
    "7x7dbl_3": "branch7x7dbl_4",
    "7x7dbl_4": "branch7x7dbl_5",
    # 8x8 modules (Mixed_7b, 7c)
    "3x3_1x3": "branch3x3_2a",
    "3x3_3x1": "branch3x3_2b",
    "3x3dbl_1x3": "branch3x3dbl_3a",
    "3x3dbl_3x1": "branch3x3dbl_3b",
}
# Grid reductions name their branches differently.
_V3_REDUCTION_PARTS = {
    "6a": {
        "3x3": "branch3x3",
        "3x3dbl_reduce": "branch3x3dbl_1",
        "3x3dbl_1": "branch3x3dbl_2",
        "3x3dbl_2": "branch3x3dbl_3",
    },
    "7a": {
        "3x3_reduce": "branch3x3_1",
        "3x3": "branch3x3_2",
        "7x7x3_reduce": "branch7x7x3_1",
        "7x7x3_1": "branch7x7x3_2",
        "7x7x3_2": "branch7x7x3_3",
        "7x7x3_3": "branch7x7x3_4",
    },
}
_V3_C_PARTS = {"3x3_reduce": "branch3x3_1", "3x3dbl_1": "branch3x3dbl_2"}
_V3_AUX_PARTS = {"1x1": "conv0", "5x5": "conv1", "": "fc"}


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown torchvision model {name!r}; available: {list(MODELS)}")


def builder_kwargs(
    name: str,
    *,
    transform_input: bool = False,
    aux_logits: bool = False,
    input_shape: tuple | None = None,
    classifier_activation: str | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    classes: int = 1000,
) -> dict[str, Any]:
    """The keyword arguments of `build_googlenet` / `build_inception_v3` that give
    torchvision's network (see `from_torchvision` for the arguments)."""
    _check_name(name)
    kwargs: dict[str, Any] = dict(TORCHVISION_OPTIONS[name])
    if transform_input:
        kwargs["transform_input"] = True
    if aux_logits:
        kwargs["aux_logits"] = True
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    if include_top:
        kwargs["classes"] = int(classes)
        kwargs["classifier_activation"] = classifier_activation
    else:
        kwargs["include_top"] = False
        if pooling is not None:
            kwargs["pooling"] = pooling
    return kwargs


def builder_call(
    name: str,
    *,
    transform_input: bool = False,
    aux_logits: bool = False,
    input_shape: tuple | None = None,
    classifier_activation: str | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    classes: int = 1000,
) -> str:
    """The Python expression that builds the same Keras architecture as
    `convert(name, path, **kwargs)`, e.g. `"keras_inception.build_googlenet(...)"`.

    Pass `weights="file.weights.h5"` in the call to load converted weights. `classes`
    is the file's (`fc.weight`'s rows; 1000 for the published files).

    Example:
    >>> builder_call("inception_v3", transform_input=True)
    "keras_inception.build_inception_v3(bn_scale=True, count_include_pad=True, aux_pool='torch', dropout=0.5, transform_input=True, classes=1000, classifier_activation=None)"
    """
    kwargs = builder_kwargs(
        name,
        transform_input=transform_input,
        aux_logits=aux_logits,
        input_shape=input_shape,
        classifier_activation=classifier_activation,
        include_top=include_top,
        pooling=pooling,
        classes=classes,
    )
    arguments = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    return f"keras_inception.{BUILDERS[name]}({arguments})"


def build(name: str, **kwargs) -> keras.Model:
    """Builds torchvision's architecture `name` in Keras, with random weights."""
    import keras_inception

    return getattr(keras_inception, BUILDERS[name])(**builder_kwargs(name, **kwargs))


def detect(state: Mapping[str, np.ndarray]) -> str | None:
    """The torchvision model a state dict belongs to, or None."""
    for name, marker in MARKERS.items():
        if marker in state:
            return name
    return None


def _split(layer_name: str) -> tuple[str, str]:
    module, _, part = layer_name.partition("_")
    return module, part


def _module_path(name: str, layer_name: str) -> str:
    """torch module path of the Keras conv/BN block or dense layer `layer_name` (the
    name without its `_conv`/`_bn` suffix)."""
    if layer_name in ("main", "predictions"):
        return "fc"
    module, part = _split(layer_name)
    if name == "googlenet":
        if layer_name in _GOOGLENET_STEM:
            return _GOOGLENET_STEM[layer_name]
        if module.startswith("aux"):
            return f"{module}.{_GOOGLENET_AUX_PARTS[part]}"
        return f"{module}.{_GOOGLENET_PARTS[part]}"
    if layer_name in _V3_STEM:
        return _V3_STEM[layer_name]
    if module == "aux":
        return f"AuxLogits.{_V3_AUX_PARTS[part]}"
    key = module.removeprefix("mixed")
    parts = _V3_REDUCTION_PARTS.get(key)
    if parts is None:
        parts = {**_V3_PARTS, **_V3_C_PARTS} if key.startswith("7") else _V3_PARTS
    return f"Mixed_{key}.{parts[part]}"


def _aux_fc1_kernel(array: np.ndarray) -> np.ndarray:
    """GoogLeNet aux fc1: torch reads the 4x4x128 map flattened channels-first
    (`c * 16 + h * 4 + w`), Keras channels-last (`(h * 4 + w) * 128 + c`)."""
    if array.shape != (1024, 2048):
        return array  # the shape check reports it
    return array.reshape(1024, 128, 4, 4).transpose(2, 3, 1, 0).reshape(2048, 1024)


def plan(name: str, model: keras.Model) -> dict[str, Source]:
    """Keras weight path -> torch tensor (`Source`) for every weight of `model`."""
    _check_name(name)
    sources: dict[str, Source] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.layers.Conv2D):
            base = _module_path(name, layer.name.removesuffix("_conv"))
            sources[layer.kernel.path] = Source(f"{base}.conv.weight", conv_kernel)
        elif isinstance(layer, keras.layers.BatchNormalization):
            base = _module_path(name, layer.name.removesuffix("_bn")) + ".bn"
            for attribute, key in (
                ("gamma", "weight"),
                ("beta", "bias"),
                ("moving_mean", "running_mean"),
                ("moving_variance", "running_var"),
            ):
                variable = getattr(layer, attribute, None)
                if variable is not None:
                    sources[variable.path] = Source(f"{base}.{key}")
        elif isinstance(layer, keras.layers.Dense):
            base = _module_path(name, layer.name)
            transform = (
                _aux_fc1_kernel
                if name == "googlenet" and layer.name.endswith("_fc")
                else dense_kernel
            )
            sources[layer.kernel.path] = Source(f"{base}.weight", transform)
            sources[layer.bias.path] = Source(f"{base}.bias")
        else:
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) has weights but no "
                f"torchvision counterpart"
            )
    return sources


def convert(
    name: str,
    path: str | os.PathLike,
    *,
    transform_input: bool = False,
    aux_logits: bool = False,
    input_shape: tuple | None = None,
    classifier_activation: str | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    _stacklevel: int = 2,
) -> tuple[keras.Model, list[str]]:
    """`from_torchvision`, also returning the names of the skipped source tensors
    (`num_batches_tracked`, and the auxiliary heads or the classifier when they are
    not asked for). The interface every `keras_inception.pretrained` source module
    shares with the command line (`python -m keras_inception.convert`)."""
    _check_name(name)
    path = os.fspath(path)
    if aux_logits and not include_top:
        raise ValueError(
            f"aux_logits=True needs include_top=True; received include_top={include_top!r}"
        )
    state = read_state_dict(path)
    found = detect(state)
    if found != name:
        kind = f"a torchvision {found} state dict" if found else "no torchvision model we know"
        raise ValueError(
            f"{path!r} is not a torchvision {name} state dict: it lacks tensor "
            f"{MARKERS[name]!r} (it looks like {kind})"
        )
    classes = 1000
    if include_top:
        if "fc.weight" not in state:
            raise ValueError(f"{path!r} has no classifier tensor 'fc.weight'")
        classes = int(state["fc.weight"].shape[0])
    aux_prefixes = AUX_PREFIXES[name]
    if aux_logits:
        missing = [p for p in aux_prefixes if not any(k.startswith(p) for k in state)]
        if missing:
            raise ValueError(
                f"{path!r} has no auxiliary head tensors ({missing[0]}*); pass aux_logits=False"
            )
        if name == "googlenet":
            warnings.warn(
                "the auxiliary heads of torchvision's published GoogLeNet weights "
                "(googlenet-1378be20.pth) are not trained (torchvision says so too): "
                "their outputs mean nothing until you train them",
                UserWarning,
                stacklevel=_stacklevel,
            )
    model = build(
        name,
        transform_input=transform_input,
        aux_logits=aux_logits,
        input_shape=input_shape,
        classifier_activation=classifier_activation,
        include_top=include_top,
        pooling=pooling,
        classes=classes,
    )

    def skip(key: str) -> bool:
        return (
            key.endswith(".num_batches_tracked")
            or (not aux_logits and key.startswith(aux_prefixes))
            or (not include_top and key.startswith("fc."))
        )

    skipped = assign(
        model,
        state,
        plan(name, model),
        path=path,
        skip=skip,
        description=f"a torchvision {name} state dict",
    )
    return model, skipped


def from_torchvision(
    name: str,
    path: str | os.PathLike,
    *,
    transform_input: bool = False,
    aux_logits: bool = False,
    input_shape: tuple | None = None,
    classifier_activation: str | None = None,
    include_top: bool = True,
    pooling: str | None = None,
) -> keras.Model:
    """A Keras GoogLeNet or InceptionV3 with torchvision's weights from `path`.

    The model's outputs equal those of torchvision's model, loaded with the same state
    dict, in eval mode, on the same images (NHWC here, NCHW there). Nothing is
    downloaded: fetch the file yourself (see the module docstring). The number of
    classes comes from the file's `fc.weight`, so fine-tuned files load too.

    Args:
        name: str. "googlenet" or "inception_v3".
        path: str or PathLike. A torchvision state dict: `.pth` (needs torch),
            `.safetensors` or `.npz` (no torch needed).
        transform_input: bool. torchvision's `transform_input`: the model maps inputs
            normalized with ImageNet's mean/std to the [-1, 1] range Google's weights
            expect. torchvision's `googlenet(weights=...)` and `inception_v3(weights=...)`
            turn it on; with False, feed `preprocess_input(x, "slim")`. Defaults to False
            (the default of torchvision's classes).
        aux_logits: bool. Add the auxiliary heads, from the file; the model then
            returns `{"main", "aux1", "aux2"}` (GoogLeNet) or `{"main", "aux"}`. The
            heads of the published GoogLeNet file are untrained (a warning says so).
            Defaults to False.
        input_shape: tuple or None. `(height, width, 3)`; None is 224x224
            (GoogLeNet) or 299x299 (InceptionV3). `(None, None, 3)` takes any size
            without auxiliary heads. Defaults to None.
        classifier_activation: str or None. None returns logits, as torch does;
            "softmax" returns probabilities. Defaults to None.
        include_top: bool. Keep the classifier; False skips the file's `fc`.
            Defaults to True.
        pooling: None, "avg" or "max". Global pooling when `include_top=False`.

    Returns:
        A `keras.Model`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: for another `name`, or a file that does not fit (one line naming
            the file and the first tensor that does not fit).

    Example:
    >>> model = from_torchvision("googlenet", "googlenet-1378be20.pth",
    ...                          transform_input=True)  # doctest: +SKIP
    >>> x = preprocess_input(images, "torchvision")  # doctest: +SKIP
    >>> decode_predictions(model.predict(x))  # doctest: +SKIP
    """
    model, _ = convert(
        name,
        path,
        transform_input=transform_input,
        aux_logits=aux_logits,
        input_shape=input_shape,
        classifier_activation=classifier_activation,
        include_top=include_top,
        pooling=pooling,
        _stacklevel=3,  # the warning points at the caller of from_torchvision
    )
    return model
