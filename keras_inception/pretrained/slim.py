"""TF-Slim's ImageNet checkpoints in keras_inception models, output for output.

TF-Slim (`tensorflow/models/research/slim`) published, among others:

| name | file | ImageNet top-1 | Keras builder |
|---|---|---|---|
| inception_v1 | `inception_v1_2016_08_28.tar.gz` | 69.8% | `build_googlenet(branch5x5_kernel=3, pool5_kernel=2)` |
| inception_v2 | `inception_v2_2016_08_28.tar.gz` | 73.9% | `build_inception_v2(variant="bn_inception")` |
| inception_v3 | `inception_v3_2016_08_28.tar.gz` | 78.0% | `build_inception_v3()` |

at `http://download.tensorflow.org/models/<file>`; each tarball holds one
`inception_vN.ckpt`. Nothing is downloaded here: fetch and unpack the file yourself.

The checkpoints have 1001 outputs, class 0 being "background" and 1-1000 the ImageNet
classes in the usual order; `include_background=False` drops class 0. They expect RGB
images scaled to [-1, 1] (`preprocess_input(x, "slim")`, i.e. `x / 127.5 - 1`).

Checkpoints are read with TensorFlow (`tf.train.load_checkpoint`), imported only when a
file is read; the models themselves are Keras only and run on every backend.

`Slim`, a `keras_inception.pretrained.converter.Converter`, names the checkpoint tensor
of every Keras weight (`slim_scope`); the command line
`python -m keras_inception.convert slim <checkpoint> -o out.weights.h5` runs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import keras
import numpy as np

from keras_inception import specs
from keras_inception.googlenet import GOOGLENET_SPECS, build_googlenet
from keras_inception.inception_v2 import BN_INCEPTION_SPECS, build_inception_v2
from keras_inception.inception_v3 import INCEPTION_V3_SPECS, build_inception_v3
from keras_inception.pretrained.common import Source
from keras_inception.pretrained.converter import (
    INCEPTION_V3_STEM_SCOPES,
    Converter,
    batch_norm_names,
)
from keras_inception.pretrained.tf_checkpoint import checkpoint_prefix, read_checkpoint

__all__ = [
    "CONVERTER",
    "MODELS",
    "Slim",
    "builder_call",
    "builder_kwargs",
    "checkpoint_prefix",
    "convert",
    "from_slim",
    "plan",
    "read_checkpoint",
    "slim_scope",
]

MODELS = ("inception_v1", "inception_v2", "inception_v3")
BUILDERS: Mapping[str, Callable[..., keras.Model]] = MappingProxyType(
    {
        "inception_v1": build_googlenet,
        "inception_v2": build_inception_v2,
        "inception_v3": build_inception_v3,
    }
)
# The builder options that give TF-Slim's architecture. Everything else (batch norm
# without gamma, epsilon 0.001, "same" max pools, the separable 7x7 stem of inception_v2,
# the auxiliary head of inception_v3) is what the builders do by default. inception_v1's
# batch norm has no gamma either: its Keras gamma is set to 1.
SLIM_OPTIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "inception_v1": MappingProxyType({"branch5x5_kernel": 3, "pool5_kernel": 2}),
        "inception_v2": MappingProxyType({"variant": "bn_inception"}),
        "inception_v3": MappingProxyType({}),
    }
)
# Variable scope of each net, its logits layer, and the default input side.
ROOTS = MappingProxyType(
    {"inception_v1": "InceptionV1", "inception_v2": "InceptionV2", "inception_v3": "InceptionV3"}
)
LOGITS = MappingProxyType(
    {
        "inception_v1": "Logits/Conv2d_0c_1x1",
        "inception_v2": "Logits/Conv2d_1c_1x1",
        "inception_v3": "Logits/Conv2d_1c_1x1",
    }
)
IMAGENET_CLASSES_WITH_BACKGROUND = 1001

# Keras stem layer (conv_bn_act name) -> TF-Slim scope.
_STEMS = MappingProxyType(
    {
        "inception_v1": {
            "conv1": "Conv2d_1a_7x7",
            "conv2_3x3_reduce": "Conv2d_2b_1x1",
            "conv2_3x3": "Conv2d_2c_3x3",
        },
        "inception_v2": {
            "conv1a": "Conv2d_1a_7x7",  # separable: depthwise_weights, pointwise_weights
            "conv2b": "Conv2d_2b_1x1",
            "conv2c": "Conv2d_2c_3x3",
        },
        "inception_v3": INCEPTION_V3_STEM_SCOPES,
    }
)
# Inside a module: the part of the Keras layer name (after `mixed5b_` / `inception3a_`)
# -> TF-Slim's `Branch_<i>/<conv>`, by module kind. Branch order = concatenation order.
_MODULE_PARTS: Mapping[type, Mapping[str, str]] = MappingProxyType(
    {
        specs.V1Module: {
            "1x1": "Branch_0/Conv2d_0a_1x1",
            "3x3_reduce": "Branch_1/Conv2d_0a_1x1",
            "3x3": "Branch_1/Conv2d_0b_3x3",
            "5x5_reduce": "Branch_2/Conv2d_0a_1x1",
            "5x5": "Branch_2/Conv2d_0b_3x3",  # a 3x3 in TF-Slim (branch5x5_kernel=3)
            "pool_proj": "Branch_3/Conv2d_0b_1x1",
        },
        specs.BNModule: {
            "1x1": "Branch_0/Conv2d_0a_1x1",
            "3x3_reduce": "Branch_1/Conv2d_0a_1x1",
            "3x3": "Branch_1/Conv2d_0b_3x3",
            "3x3dbl_reduce": "Branch_2/Conv2d_0a_1x1",
            "3x3dbl_1": "Branch_2/Conv2d_0b_3x3",
            "3x3dbl_2": "Branch_2/Conv2d_0c_3x3",
            "pool_proj": "Branch_3/Conv2d_0b_1x1",
        },
        specs.BNReduction: {
            "3x3_reduce": "Branch_0/Conv2d_0a_1x1",
            "3x3": "Branch_0/Conv2d_1a_3x3",
            "3x3dbl_reduce": "Branch_1/Conv2d_0a_1x1",
            "3x3dbl_1": "Branch_1/Conv2d_0b_3x3",
            "3x3dbl_2": "Branch_1/Conv2d_1a_3x3",
        },
        specs.V3ModuleA: {
            "1x1": "Branch_0/Conv2d_0a_1x1",
            "5x5_reduce": "Branch_1/Conv2d_0a_1x1",
            "5x5": "Branch_1/Conv2d_0b_5x5",
            "3x3dbl_reduce": "Branch_2/Conv2d_0a_1x1",
            "3x3dbl_1": "Branch_2/Conv2d_0b_3x3",
            "3x3dbl_2": "Branch_2/Conv2d_0c_3x3",
            "pool_proj": "Branch_3/Conv2d_0b_1x1",
        },
        specs.V3ReductionA: {
            "3x3": "Branch_0/Conv2d_1a_1x1",  # TF-Slim's name; the kernel is 3x3
            "3x3dbl_reduce": "Branch_1/Conv2d_0a_1x1",
            "3x3dbl_1": "Branch_1/Conv2d_0b_3x3",
            "3x3dbl_2": "Branch_1/Conv2d_1a_1x1",  # also 3x3
        },
        specs.V3ModuleB: {
            "1x1": "Branch_0/Conv2d_0a_1x1",
            "7x7_reduce": "Branch_1/Conv2d_0a_1x1",
            "7x7_1": "Branch_1/Conv2d_0b_1x7",
            "7x7_2": "Branch_1/Conv2d_0c_7x1",
            "7x7dbl_reduce": "Branch_2/Conv2d_0a_1x1",
            "7x7dbl_1": "Branch_2/Conv2d_0b_7x1",
            "7x7dbl_2": "Branch_2/Conv2d_0c_1x7",
            "7x7dbl_3": "Branch_2/Conv2d_0d_7x1",
            "7x7dbl_4": "Branch_2/Conv2d_0e_1x7",
            "pool_proj": "Branch_3/Conv2d_0b_1x1",
        },
        specs.V3ReductionB: {
            "3x3_reduce": "Branch_0/Conv2d_0a_1x1",
            "3x3": "Branch_0/Conv2d_1a_3x3",
            "7x7x3_reduce": "Branch_1/Conv2d_0a_1x1",
            "7x7x3_1": "Branch_1/Conv2d_0b_1x7",
            "7x7x3_2": "Branch_1/Conv2d_0c_7x1",
            "7x7x3_3": "Branch_1/Conv2d_1a_3x3",
        },
        specs.V3ModuleC: {
            "1x1": "Branch_0/Conv2d_0a_1x1",
            "3x3_reduce": "Branch_1/Conv2d_0a_1x1",
            "3x3_1x3": "Branch_1/Conv2d_0b_1x3",
            "3x3_3x1": "Branch_1/Conv2d_0b_3x1",
            "3x3dbl_reduce": "Branch_2/Conv2d_0a_1x1",
            "3x3dbl_1": "Branch_2/Conv2d_0b_3x3",
            "3x3dbl_1x3": "Branch_2/Conv2d_0c_1x3",
            "3x3dbl_3x1": "Branch_2/Conv2d_0d_3x1",
            "pool_proj": "Branch_3/Conv2d_0b_1x1",
        },
    }
)
# Where TF-Slim's own names break its pattern: (net, TF-Slim module, part) -> scope.
_QUIRKS = MappingProxyType(
    {
        ("inception_v1", "Mixed_5b", "5x5"): "Branch_2/Conv2d_0a_3x3",
        ("inception_v3", "Mixed_5c", "5x5_reduce"): "Branch_1/Conv2d_0b_1x1",
        ("inception_v3", "Mixed_5c", "5x5"): "Branch_1/Conv_1_0c_5x5",
        ("inception_v3", "Mixed_7c", "3x3_3x1"): "Branch_1/Conv2d_0c_3x1",
    }
)
_AUX_PARTS = MappingProxyType(
    {
        "1x1": "AuxLogits/Conv2d_1b_1x1",
        "5x5": "AuxLogits/Conv2d_2a_5x5",
        "": "AuxLogits/Conv2d_2b_1x1",
    }
)
_TABLES = MappingProxyType(
    {
        "inception_v1": GOOGLENET_SPECS,
        "inception_v2": BN_INCEPTION_SPECS,
        "inception_v3": INCEPTION_V3_SPECS,
    }
)
# Tensors of a training checkpoint that are not model weights: the step counter,
# optimizer slots and moving-average shadows (`<variable>/<slot>`).
_NON_MODEL = ("global_step", "beta1_power", "beta2_power")
_SLOTS = (
    "Momentum",
    "RMSProp",
    "RMSProp_1",
    "Adam",
    "Adam_1",
    "Adagrad",
    "Ftrl",
    "Ftrl_1",
    "ExponentialMovingAverage",
)


def slim_scope(name: str, layer_name: str) -> str:
    """TF-Slim variable scope of the Keras conv/BN block or dense layer `layer_name`
    (without its `_conv`/`_bn` suffix), e.g. `("inception_v3", "mixed5c_5x5")` ->
    `"InceptionV3/Mixed_5c/Branch_1/Conv_1_0c_5x5"`.

    Raises:
        ValueError: for a layer TF-Slim's network does not have.
    """
    CONVERTER.check_name(name)
    root = ROOTS[name]
    if layer_name in ("predictions", "main"):
        return f"{root}/{LOGITS[name]}"
    if layer_name in _STEMS[name]:
        return f"{root}/{_STEMS[name][layer_name]}"
    module, _, part = layer_name.partition("_")
    if module == "aux" and name == "inception_v3" and part in _AUX_PARTS:
        return f"{root}/{_AUX_PARTS[part]}"
    prefix = "inception" if name == "inception_v1" else "mixed"
    key = module.removeprefix(prefix)
    table = _TABLES[name]
    if module.startswith(prefix) and key in table and key != "stem":
        parts = _MODULE_PARTS[type(table[key])]
        if part in parts:
            if name == "inception_v1":  # GoogLeNet's 3a, 3b, 4a... are Slim's 3b, 3c, 4b...
                key = key[0] + chr(ord(key[1]) + 1)
            mixed = f"Mixed_{key}"
            return f"{root}/{mixed}/{_QUIRKS.get((name, mixed, part), parts[part])}"
    raise ValueError(f"Keras layer {layer_name!r} has no counterpart in TF-Slim's {name}")


def _dense_kernel(drop_background: bool) -> Callable[[np.ndarray], np.ndarray]:
    """TF-Slim's 1x1 logits conv `(1, 1, in, classes)` -> Dense `(in, classes)`."""

    def transform(array: np.ndarray) -> np.ndarray:
        if array.ndim != 4 or array.shape[:2] != (1, 1):
            return array  # the shape check reports it
        array = array[0, 0]
        return array[:, 1:] if drop_background else array

    return transform


def _drop_first(array: np.ndarray) -> np.ndarray:
    return array[1:] if array.ndim == 1 else array


class Slim(Converter):
    """TF-Slim's inception_v1/v2/v3 checkpoints (`<Root>/<scope>/weights`, `.../biases`,
    `.../BatchNorm/{beta,moving_mean,moving_variance}`; no gamma: it is set to 1).

    Examples:
    >>> CONVERTER.description("inception_v2")
    'a TF-Slim inception_v2 checkpoint'
    """

    label = "TF-Slim"
    file_kind = "checkpoint"
    builders = BUILDERS
    options = SLIM_OPTIONS
    markers = MappingProxyType({name: f"{root}/" for name, root in ROOTS.items()})
    aux_prefixes = MappingProxyType({"inception_v3": ("InceptionV3/AuxLogits/",)})
    classifier_prefixes = MappingProxyType(
        {name: (f"{root}/Logits/",) for name, root in ROOTS.items()}
    )
    classifier_key = MappingProxyType(
        {name: f"{ROOTS[name]}/{LOGITS[name]}/weights" for name in MODELS}
    )
    classes_axis = -1  # the 1x1 logits conv's (1, 1, in, classes)
    tensor_names = MappingProxyType(
        {
            "separable_conv": {
                "depthwise_kernel": "{}/depthwise_weights",
                "pointwise_kernel": "{}/pointwise_weights",
                "bias": "{}/biases",
            },
            "conv": {"kernel": "{}/weights", "bias": "{}/biases"},
            "batch_norm": batch_norm_names("{}/BatchNorm/"),
            "dense": {"kernel": "{}/weights", "bias": "{}/biases"},
        }
    )
    extra_options = MappingProxyType({"include_background": True})

    def read(self, path: str) -> dict[str, np.ndarray]:
        return read_checkpoint(path)

    def scope(self, name: str, layer_name: str) -> str:
        return slim_scope(name, layer_name)

    def ignored(self, key: str) -> bool:
        return key in _NON_MODEL or key.rsplit("/", 1)[-1] in _SLOTS

    def validate(self, name: str, *, aux_logits: bool, include_top: bool, **options: Any) -> None:
        if aux_logits and name != "inception_v3":
            raise ValueError(
                f"TF-Slim's {name} has no auxiliary head (only inception_v3 has one); "
                f"received aux_logits={aux_logits!r}"
            )

    def default_classes(self, *, include_background: bool = True) -> int:
        return IMAGENET_CLASSES_WITH_BACKGROUND - (0 if include_background else 1)

    def file_classes(
        self, name: str, state: Mapping, path: str, *, include_background: bool = True
    ) -> int:
        classes = super().file_classes(name, state, path)
        if include_background:
            return classes
        if classes != IMAGENET_CLASSES_WITH_BACKGROUND:
            raise ValueError(
                "include_background=False drops class 0 of TF-Slim's 1001 ImageNet "
                f"outputs; {path!r} has {classes} classes"
            )
        return classes - 1

    def source(
        self, name: str, layer, attribute: str, key: str, *, include_background: bool = True
    ) -> Source:
        if attribute == "gamma":  # TF-Slim's batch norm has none: gamma = 1
            return Source(key, fill=1.0)
        if not isinstance(layer, keras.layers.Dense):
            return Source(key)
        if attribute == "kernel":
            return Source(key, _dense_kernel(not include_background))
        return Source(key, None if include_background else _drop_first)


CONVERTER = Slim()
builder_kwargs, builder_call, plan, convert = CONVERTER.module_functions()


def from_slim(
    name: str, checkpoint: str | os.PathLike, *, include_background: bool = True, **options: Any
) -> keras.Model:
    """A Keras Inception with the weights of a TF-Slim checkpoint.

    The model's outputs equal those of TF-Slim's `nets.inception_vN` (built in its
    `inception_vN_arg_scope()`, `is_training=False`) restored from the same checkpoint,
    on the same images, at the default input size (224x224; 299x299 for inception_v3).
    At other sizes the final average pool here is global, where TF-Slim's is a fixed
    7x7 (8x8) window. Nothing is downloaded: fetch the checkpoint yourself (see the
    module docstring). Feed RGB images in [-1, 1]: `preprocess_input(x, "slim")`.

    - "inception_v1": GoogLeNet in TF-Slim's layout,
      `build_googlenet(branch5x5_kernel=3, pool5_kernel=2)`: batch norm (without gamma:
      the Keras gamma is set to 1), one 3x3 conv in the "5x5" branch, a 2x2/2 max pool
      before stage 5. No auxiliary heads.
    - "inception_v2": BN-Inception, `build_inception_v2(variant="bn_inception")`, with
      its separable 7x7/2 stem convolution. No auxiliary head.
    - "inception_v3": `build_inception_v3()`, optionally with its auxiliary head.

    Args:
        name: str. "inception_v1", "inception_v2" or "inception_v3".
        checkpoint: str or PathLike. A TF checkpoint: the published V1 file
            (`inception_v3.ckpt`), a V2 prefix or one of its files, or a directory.
        include_background: bool. Keep TF-Slim's 1001 outputs, class 0 being
            "background"; False drops it, leaving the 1000 ImageNet classes (indices
            shift down by one). Defaults to True.
        **options: `aux_logits` (inception_v3 only), `input_shape`,
            `classifier_activation`, `include_top` and `pooling`, as `Converter.convert`
            takes them. None as `classifier_activation` returns logits, as TF-Slim's
            `logits`; "softmax" returns its `Predictions`; `include_top=False` skips the
            checkpoint's `Logits`.

    Returns:
        A `keras.Model`.

    Raises:
        FileNotFoundError: if there is no checkpoint at `checkpoint`.
        ImportError: if TensorFlow (which reads the checkpoint) is not installed.
        ValueError: for another `name`, `aux_logits` for a net without an auxiliary
            head, or a checkpoint that does not fit (one line naming the file and the
            first tensor that does not fit).

    Example:
    >>> model = from_slim("inception_v3", "inception_v3.ckpt",
    ...                   include_background=False)  # doctest: +SKIP
    >>> model.output_shape  # ImageNet's 1000 classes, background dropped  # doctest: +SKIP
    (None, 1000)
    """
    return CONVERTER.load(name, checkpoint, include_background=include_background, **options)
