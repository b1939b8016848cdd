"""torchvision's GoogLeNet and InceptionV3 weights in Keras, output for output.

torchvision publishes Google's ImageNet weights of both networks:

| name | file | ImageNet top-1 (torchvision) |
|---|---|---|
| googlenet | https://download.pytorch.org/models/googlenet-1378be20.pth | 69.778% |
| inception_v3 | https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth | 77.294% |

`from_torchvision(name, path)` builds the matching Keras model (`builder_kwargs`) and
assigns the state dict strictly, by the names of `Torchvision`, a
`keras_inception.pretrained.converter.Converter`. The
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
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import keras
import numpy as np

from keras_inception.googlenet import build_googlenet
from keras_inception.inception_v3 import build_inception_v3
from keras_inception.pretrained.common import (
    Source,
    conv_kernel,
    dense_kernel,
    read_state_dict,
)
from keras_inception.pretrained.converter import (
    INCEPTION_V3_STEM_SCOPES,
    Converter,
    batch_norm_names,
    warn_caller,
)

# One tensor prefix that only each network's state dict holds.
MARKERS: Mapping[str, str] = MappingProxyType(
    {
        "googlenet": "inception3a.branch1.conv.weight",
        "inception_v3": "Mixed_5b.branch1x1.conv.weight",
    }
)

# Prefix of the auxiliary heads' tensors.
AUX_PREFIXES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}
)

# The builder options that make each Keras builder torchvision's network.
TORCHVISION_OPTIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "googlenet": MappingProxyType(
            {
                "branch5x5_kernel": 3,
                "padding": "torch",
                "pool5_kernel": 2,
                "aux_pool": "torch",
                "dropout": 0.2,
            }
        ),
        "inception_v3": MappingProxyType(
            {
                "bn_scale": True,
                "count_include_pad": True,
                "aux_pool": "torch",
                "dropout": 0.5,
            }
        ),
    }
)

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


def _module_path(name: str, layer_name: str) -> str:
    """torch module path of the Keras conv/BN block or dense layer `layer_name` (the
    name without its `_conv`/`_bn` suffix)."""
    if layer_name in ("main", "predictions"):
        return "fc"
    module, _, part = layer_name.partition("_")
    if name == "googlenet":
        if layer_name in _GOOGLENET_STEM:
            return _GOOGLENET_STEM[layer_name]
        if module.startswith("aux"):
            return f"{module}.{_GOOGLENET_AUX_PARTS[part]}"
        return f"{module}.{_GOOGLENET_PARTS[part]}"
    if layer_name in INCEPTION_V3_STEM_SCOPES:
        return INCEPTION_V3_STEM_SCOPES[layer_name]
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


class Torchvision(Converter):
    """torchvision's `googlenet` and `inception_v3` state dicts (`BasicConv2d` blocks:
    `<module>.conv.weight`, `<module>.bn.{weight,bias,running_mean,running_var}`).

    Examples:
    >>> CONVERTER.scope("inception_v3", "mixed7b_3x3dbl_1x3")
    'Mixed_7b.branch3x3dbl_3a'
    """

    label = "torchvision"
    builders = MappingProxyType({"googlenet": build_googlenet, "inception_v3": build_inception_v3})
    options = TORCHVISION_OPTIONS
    markers = MARKERS
    aux_prefixes = AUX_PREFIXES
    classifier_prefixes = MappingProxyType(dict.fromkeys(MARKERS, ("fc.",)))
    classifier_key = MappingProxyType(dict.fromkeys(MARKERS, "fc.weight"))
    classes_axis = 0  # torch's (out, in)
    tensor_names = MappingProxyType(
        {
            "conv": {"kernel": "{}.conv.weight"},
            "batch_norm": batch_norm_names(
                "{}.bn.",
                gamma="weight",
                beta="bias",
                moving_mean="running_mean",
                moving_variance="running_var",
            ),
            "dense": {"kernel": "{}.weight", "bias": "{}.bias"},
        }
    )
    extra_options = MappingProxyType({"transform_input": False})

    def read(self, path: str) -> dict[str, np.ndarray]:
        return read_state_dict(path)

    def scope(self, name: str, layer_name: str) -> str:
        try:
            return _module_path(name, layer_name)
        except KeyError:
            raise ValueError(
                f"Keras layer {layer_name!r} has no counterpart in torchvision's {name}"
            ) from None

    def ignored(self, key: str) -> bool:
        return key.endswith(".num_batches_tracked")

    def option_kwargs(self, *, transform_input: bool = False) -> dict[str, Any]:
        return {"transform_input": True} if transform_input else {}

    def source(self, name: str, layer, attribute: str, key: str, **options: Any) -> Source:
        if attribute != "kernel":
            return Source(key)
        if not isinstance(layer, keras.layers.Dense):
            return Source(key, conv_kernel)
        if name == "googlenet" and layer.name.endswith("_fc"):
            return Source(key, _aux_fc1_kernel)
        return Source(key, dense_kernel)

    def check_aux(self, name: str, state: Mapping, path: str) -> None:
        super().check_aux(name, state, path)
        if name == "googlenet":
            warn_caller(
                "the auxiliary heads of torchvision's published GoogLeNet weights "
                "(googlenet-1378be20.pth) are not trained (torchvision says so too): "
                "their outputs mean nothing until you train them"
            )


CONVERTER = Torchvision()
MODELS = CONVERTER.models
builder_kwargs, builder_call, plan, convert = CONVERTER.module_functions()


def from_torchvision(
    name: str, path: str | os.PathLike, *, transform_input: bool = False, **options: Any
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
        **options: `aux_logits`, `input_shape`, `classifier_activation`, `include_top`
            and `pooling`, as `Converter.convert` takes them. The auxiliary heads of the
            published GoogLeNet file are untrained (a warning says so); None as
            `classifier_activation` returns logits, as torch does; `include_top=False`
            skips the file's `fc`.

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
    return CONVERTER.load(name, path, transform_input=transform_input, **options)
