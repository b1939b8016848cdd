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

Every source module of `keras_inception.pretrained` has the interface of the command
line `python -m keras_inception.convert slim <name> <checkpoint> -o out.weights.h5`:
`convert(name, path, **kwargs) -> (model, skipped tensor names)` and
`builder_call(name, **kwargs) -> str`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import keras
import numpy as np

from keras_inception.googlenet import GOOGLENET_SPECS
from keras_inception.inception_v2 import BN_INCEPTION_SPECS
from keras_inception.inception_v3 import INCEPTION_V3_SPECS
from keras_inception.pretrained.common import Source, assign, one_line
from keras_inception.specs import (
    BNModule,
    BNReduction,
    V1Module,
    V3ModuleA,
    V3ModuleB,
    V3ModuleC,
    V3ReductionA,
    V3ReductionB,
)

MODELS = ("inception_v1", "inception_v2", "inception_v3")
BUILDERS = MappingProxyType(
    {
        "inception_v1": "build_googlenet",
        "inception_v2": "build_inception_v2",
        "inception_v3": "build_inception_v3",
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
        "inception_v3": {
            "conv1a": "Conv2d_1a_3x3",
            "conv2a": "Conv2d_2a_3x3",
            "conv2b": "Conv2d_2b_3x3",
            "conv3b": "Conv2d_3b_1x1",
            "conv4a": "Conv2d_4a_3x3",
        },
    }
)
# Inside a module: the part of the Keras layer name (after `mixed5b_` / `inception3a_`)
# -> TF-Slim's `Branch_<i>/<conv>`, by module kind. Branch order = concatenation order.
_MODULE_PARTS: Mapping[type, Mapping[str, str]] = MappingProxyType(
    {
        V1Module: {
            "1x1": "Branch_0/Conv2d_0a_1x1",
            "3x3_reduce": "Branch_1/Conv2d_0a_1x1",
            "3x3": "Branch_1/Conv2d_0b_3x3",
            "5x5_reduce": "Branch_2/Conv2d_0a_1x1",
            "5x5": "Branch_2/Conv2d_0b_3x3",  # a 3x3 in TF-Slim (branch5x5_kernel=3)
            "pool_proj": "Branch_3/Conv2d_0b_1x1",
        },
        BNModule: {
            "1x1": "Branch_0/Conv2d_0a_1x1",
            "3x3_reduce": "Branch_1/Conv2d_0a_1x1",
            "3x3": "Branch_1/Conv2d_0b_3x3",
            "3x3dbl_reduce": "Branch_2/Conv2d_0a_1x1",
            "3x3dbl_1": "Branch_2/Conv2d_0b_3x3",
            "3x3dbl_2": "Branch_2/Conv2d_0c_3x3",
            "pool_proj": "Branch_3/Conv2d_0b_1x1",
        },
        BNReduction: {
            "3x3_reduce": "Branch_0/Conv2d_0a_1x1",
            "3x3": "Branch_0/Conv2d_1a_3x3",
            "3x3dbl_reduce": "Branch_1/Conv2d_0a_1x1",
            "3x3dbl_1": "Branch_1/Conv2d_0b_3x3",
            "3x3dbl_2": "Branch_1/Conv2d_1a_3x3",
        },
        V3ModuleA: {
            "1x1": "Branch_0/Conv2d_0a_1x1",
            "5x5_reduce": "Branch_1/Conv2d_0a_1x1",
            "5x5": "Branch_1/Conv2d_0b_5x5",
            "3x3dbl_reduce": "Branch_2/Conv2d_0a_1x1",
            "3x3dbl_1": "Branch_2/Conv2d_0b_3x3",
            "3x3dbl_2": "Branch_2/Conv2d_0c_3x3",
            "pool_proj": "Branch_3/Conv2d_0b_1x1",
        },
        V3ReductionA: {
            "3x3": "Branch_0/Conv2d_1a_1x1",  # TF-Slim's name; the kernel is 3x3
            "3x3dbl_reduce": "Branch_1/Conv2d_0a_1x1",
            "3x3dbl_1": "Branch_1/Conv2d_0b_3x3",
            "3x3dbl_2": "Branch_1/Conv2d_1a_1x1",  # also 3x3
        },
        V3ModuleB: {
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
        V3ReductionB: {
            "3x3_reduce": "Branch_0/Conv2d_0a_1x1",
            "3x3": "Branch_0/Conv2d_1a_3x3",
            "7x7x3_reduce": "Branch_1/Conv2d_0a_1x1",
            "7x7x3_1": "Branch_1/Conv2d_0b_1x7",
            "7x7x3_2": "Branch_1/Conv2d_0c_7x1",
            "7x7x3_3": "Branch_1/Conv2d_1a_3x3",
        },
        V3ModuleC: {
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
_DATA_SHARD = re.compile(r"\.data-\d+-of-\d+$")


def _check_name(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown TF-Slim model {name!r}; available: {list(MODELS)}")


# --- reading ------------------------------------------------------------------------------


def _import_tensorflow(path: str):
    try:
        import tensorflow as tf
    except ImportError as err:
        raise ImportError(
            f"reading the TF-Slim checkpoint {path!r} needs TensorFlow (`pip install "
            "tensorflow`); the converted Keras weights (`python -m keras_inception.convert "
            "slim ...`) load without it"
        ) from err
    return tf


def checkpoint_prefix(path: str | os.PathLike) -> str:
    """The path TensorFlow reads a checkpoint by.

    Accepts a V1 single file (`inception_v3.ckpt`, as in the published tarballs), a V2
    prefix (`model.ckpt`, with `model.ckpt.index` beside it), one of the V2 files
    (`model.ckpt.index`, `model.ckpt.data-00000-of-00001`), or a directory holding a
    `checkpoint` state file.

    Raises:
        FileNotFoundError: naming `path`, if none of these exists.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = _import_tensorflow(path).train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"TF-Slim checkpoint not found: directory {path!r} holds none")
        return latest
    prefix = path
    if prefix.endswith(".index"):
        prefix = prefix[: -len(".index")]
    prefix = _DATA_SHARD.sub("", prefix)
    if os.path.isfile(prefix) or os.path.isfile(prefix + ".index"):
        return prefix
    raise FileNotFoundError(
        f"TF-Slim checkpoint not found: {path!r} (neither a checkpoint file nor the "
        f"prefix of {prefix + '.index'!r})"
    )


def read_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a TensorFlow checkpoint, as numpy arrays (float32 for floats).

    Args:
        path: str or PathLike. See `checkpoint_prefix` for the accepted forms.

    Returns:
        dict of variable name (e.g. `"InceptionV3/Conv2d_1a_3x3/weights"`) to array.

    Raises:
        FileNotFoundError: if there is no checkpoint at `path`.
        ImportError: if TensorFlow is not installed.
        ValueError: one line naming the file (and the tensor, if one fails to read) for
            a file that is not a readable checkpoint.

    Example:
    >>> state = read_checkpoint("inception_v3.ckpt")  # doctest: +SKIP
    >>> state["InceptionV3/Conv2d_1a_3x3/weights"].shape  # doctest: +SKIP
    (3, 3, 3, 32)
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        checkpoint_prefix(path)  # FileNotFoundError before TensorFlow is needed
        if path.lower().endswith((".tar.gz", ".tgz", ".tar")):
            raise ValueError(
                f"{path!r} is an archive: unpack it (`tar xzf`) and pass the "
                "inception_vN.ckpt inside"
            )
    tf = _import_tensorflow(path)
    prefix = checkpoint_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_shape_map())
    except Exception as err:  # noqa: BLE001 - TF's many error types become one line
        raise ValueError(
            f"could not read {path!r} as a TensorFlow checkpoint: {one_line(err)}"
        ) from None
    state = {}
    for name in names:
        try:
            value = np.asarray(reader.get_tensor(name))
        except Exception as err:  # noqa: BLE001
            raise ValueError(
                f"could not read tensor {name!r} from {path!r} (truncated or corrupt "
                f"checkpoint?): {one_line(err)}"
            ) from None
        if np.issubdtype(value.dtype, np.floating):
            value = value.astype("float32")
        state[name] = value
    if not state:
        raise ValueError(f"{path!r} holds no tensors")
    return state


# --- architecture -------------------------------------------------------------------------


def builder_kwargs(
    name: str,
    *,
    include_background: bool = True,
    aux_logits: bool = False,
    input_shape: tuple | None = None,
    classifier_activation: str | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    classes: int | None = None,
) -> dict[str, Any]:
    """The keyword arguments of the Keras builder that give TF-Slim's network `name`
    (see `from_slim` for the arguments). `classes` defaults to 1001, or 1000 without
    the background class."""
    _check_name(name)
    if aux_logits and name != "inception_v3":
        raise ValueError(
            f"TF-Slim's {name} has no auxiliary head (only inception_v3 has one); "
            f"received aux_logits={aux_logits!r}"
        )
    if aux_logits and not include_top:
        raise ValueError(
            f"aux_logits=True needs include_top=True; received include_top={include_top!r}"
        )
    kwargs: dict[str, Any] = dict(SLIM_OPTIONS[name])
    if aux_logits:
        kwargs["aux_logits"] = True
    if input_shape is not None:
        kwargs["input_shape"] = tuple(input_shape)
    if include_top:
        if classes is None:
            classes = IMAGENET_CLASSES_WITH_BACKGROUND - (0 if include_background else 1)
        kwargs["classes"] = int(classes)
        kwargs["classifier_activation"] = classifier_activation
    else:
        kwargs["include_top"] = False
        if pooling is not None:
            kwargs["pooling"] = pooling
    return kwargs


def builder_call(name: str, **kwargs) -> str:
    """The Python expression that builds the same Keras architecture as
    `convert(name, path, **kwargs)`; add `weights="file.weights.h5"` to load converted
    weights.

    Example:
    >>> builder_call("inception_v1")
    'keras_inception.build_googlenet(branch5x5_kernel=3, pool5_kernel=2, classes=1001, classifier_activation=None)'
    """
    arguments = ", ".join(
        f"{key}={value!r}" for key, value in builder_kwargs(name, **kwargs).items()
    )
    return f"keras_inception.{BUILDERS[name]}({arguments})"


def build(name: str, **kwargs) -> keras.Model:
    """Builds TF-Slim's architecture `name` in Keras, with random weights."""
    import keras_inception

    return getattr(keras_inception, BUILDERS[name])(**builder_kwargs(name, **kwargs))


def slim_scope(name: str, layer_name: str) -> str:
    """TF-Slim variable scope of the Keras conv/BN block or dense layer `layer_name`
    (without its `_conv`/`_bn` suffix), e.g. `("inception_v3", "mixed5c_5x5")` ->
    `"InceptionV3/Mixed_5c/Branch_1/Conv_1_0c_5x5"`.

    Raises:
        ValueError: for a layer TF-Slim's network does not have.
    """
    _check_name(name)
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


# --- assignment ---------------------------------------------------------------------------


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


def plan(name: str, model: keras.Model, *, include_background: bool = True) -> dict[str, Source]:
    """Keras weight path -> checkpoint tensor (`Source`) for every weight of `model`."""
    _check_name(name)
    sources: dict[str, Source] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.layers.SeparableConv2D):
            base = slim_scope(name, layer.name.removesuffix("_conv"))
            sources[layer.depthwise_kernel.path] = Source(f"{base}/depthwise_weights")
            sources[layer.pointwise_kernel.path] = Source(f"{base}/pointwise_weights")
            if layer.bias is not None:
                sources[layer.bias.path] = Source(f"{base}/biases")
        elif isinstance(layer, keras.layers.Conv2D):
            base = slim_scope(name, layer.name.removesuffix("_conv"))
            sources[layer.kernel.path] = Source(f"{base}/weights")
            if layer.bias is not None:
                sources[layer.bias.path] = Source(f"{base}/biases")
        elif isinstance(layer, keras.layers.BatchNormalization):
            base = slim_scope(name, layer.name.removesuffix("_bn")) + "/BatchNorm"
            if layer.gamma is not None:  # TF-Slim's batch norm has none: gamma = 1
                sources[layer.gamma.path] = Source(f"{base}/gamma", fill=1.0)
            for attribute in ("beta", "moving_mean", "moving_variance"):
                variable = getattr(layer, attribute)
                sources[variable.path] = Source(f"{base}/{attribute}")
        elif isinstance(layer, keras.layers.Dense):
            base = slim_scope(name, layer.name)
            drop = not include_background
            sources[layer.kernel.path] = Source(f"{base}/weights", _dense_kernel(drop))
            sources[layer.bias.path] = Source(f"{base}/biases", _drop_first if drop else None)
        else:
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) has weights but no TF-Slim "
                "counterpart"
            )
    return sources


def detect(state: Mapping[str, np.ndarray]) -> str | None:
    """The TF-Slim net whose variables `state` holds (by top-level scope), or None."""
    for name, root in ROOTS.items():
        if any(key.startswith(root + "/") for key in state):
            return name
    return None


def summarize(names: list[str]) -> str:
    """`"global_step x1, AuxLogits/* x10"`-style summary of skipped tensor names."""
    groups: dict[str, int] = {}
    for key in names:
        parts = key.split("/")
        if parts[-1] in _SLOTS:
            group = f"*/{parts[-1]}"
        elif "AuxLogits" in parts:
            group = "AuxLogits/*"
        elif "Logits" in parts:
            group = "Logits/*"
        else:
            group = key
        groups[group] = groups.get(group, 0) + 1
    return ", ".join(f"{group} x{count}" for group, count in groups.items()) or "none"


def convert(
    name: str,
    path: str | os.PathLike,
    *,
    include_background: bool = True,
    aux_logits: bool = False,
    input_shape: tuple | None = None,
    classifier_activation: str | None = None,
    include_top: bool = True,
    pooling: str | None = None,
) -> tuple[keras.Model, list[str]]:
    """`from_slim`, also returning the names of the skipped checkpoint tensors
    (`global_step`, optimizer slots, moving-average shadows, and the auxiliary head or
    the classifier when they are not asked for). The interface every
    `keras_inception.pretrained` source module shares with the command line
    (`python -m keras_inception.convert`)."""
    _check_name(name)
    path = os.fspath(path)
    builder_kwargs(name, aux_logits=aux_logits, include_top=include_top)  # validates
    state = read_checkpoint(path)
    found = detect(state)
    if found != name:
        kind = f"TF-Slim's {found}" if found else "no TF-Slim Inception we know"
        raise ValueError(
            f"{path!r} is not a TF-Slim {name} checkpoint: it has no {ROOTS[name]}/* "
            f"tensors (it looks like {kind})"
        )
    root = ROOTS[name]
    classes = None
    if include_top:
        logits = f"{root}/{LOGITS[name]}/weights"
        if logits not in state:
            raise ValueError(f"{path!r} has no classifier tensor {logits!r}")
        classes = int(state[logits].shape[-1])
        if not include_background:
            if classes != IMAGENET_CLASSES_WITH_BACKGROUND:
                raise ValueError(
                    "include_background=False drops class 0 of TF-Slim's 1001 ImageNet "
                    f"outputs; {path!r} has {classes} classes"
                )
            classes -= 1
    if aux_logits and not any(key.startswith(f"{root}/AuxLogits/") for key in state):
        raise ValueError(
            f"{path!r} has no auxiliary head tensors ({root}/AuxLogits/*); pass aux_logits=False"
        )
    model = build(
        name,
        include_background=include_background,
        aux_logits=aux_logits,
        input_shape=input_shape,
        classifier_activation=classifier_activation,
        include_top=include_top,
        pooling=pooling,
        classes=classes,
    )

    def skip(key: str) -> bool:
        parts = key.split("/")
        return (
            key in _NON_MODEL
            or parts[-1] in _SLOTS
            or (not aux_logits and key.startswith(f"{root}/AuxLogits/"))
            or (not include_top and key.startswith(f"{root}/Logits/"))
        )

    skipped = assign(
        model,
        state,
        plan(name, model, include_background=include_background),
        path=path,
        skip=skip,
        description=f"a TF-Slim {name} checkpoint",
    )
    return model, skipped


def from_slim(
    name: str,
    checkpoint: str | os.PathLike,
    *,
    include_background: bool = True,
    aux_logits: bool = False,
    input_shape: tuple | None = None,
    classifier_activation: str | None = None,
    include_top: bool = True,
    pooling: str | None = None,
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
        aux_logits: bool. Add inception_v3's auxiliary head from the checkpoint; the
            model then returns `{"main", "aux"}`. Defaults to False.
        input_shape: tuple or None. `(height, width, 3)`; None is 224x224 (299x299 for
            inception_v3). `(None, None, 3)` takes any size without the auxiliary
            head. Defaults to None.
        classifier_activation: str or None. None returns logits, as TF-Slim's `logits`;
            "softmax" returns its `Predictions`. Defaults to None.
        include_top: bool. Keep the classifier; False skips the checkpoint's `Logits`.
            Defaults to True.
        pooling: None, "avg" or "max". Global pooling when `include_top=False`.

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
    >>> x = preprocess_input(images, "slim")  # doctest: +SKIP
    >>> decode_predictions(model.predict(x))  # doctest: +SKIP
    """
    model, _ = convert(
        name,
        checkpoint,
        include_background=include_background,
        aux_logits=aux_logits,
        input_shape=input_shape,
        classifier_activation=classifier_activation,
        include_top=include_top,
        pooling=pooling,
    )
    return model
