"""`train --init-weights SOURCE`: start a run from trained weights.

SOURCE is one of:

- a training workdir (its config.json, metrics.json and model.keras, else inference.keras);
- a `.keras` file (inside a workdir: that run's architecture; elsewhere: a registered
  model with its default widths, whose stem and source options are found by trying them);
- a `.weights.h5` file from `python -m keras_inception.convert`, with the
  `.architecture.json` file that it writes beside it;
- `torchvision:FILE` (a GoogLeNet or InceptionV3 state dict; built with torchvision's
  `transform_input`, as its pretrained models are) or `slim:FILE` / `slim:DIR` (a TF-Slim
  checkpoint), converted on the fly by `keras_inception.pretrained`.

The architecture comes from the source (`InitSource.architecture`: the TrainConfig fields
model, stem, widths and specs; `InitSource.builder_options`: padding, pool and
`transform_input` options). `resolve_config` refuses an architecture flag that contradicts
it. `load_backbone` then copies every backbone weight by layer name, strictly (a missing
layer or a shape that differs names the layer), adapts the first convolution to the
data's channels as timm's `adapt_input_conv` does (3 -> 1: the sum over the input
channels; 1 -> N or 3 -> N: repeated, times 3/N or 1/N), and leaves the classifiers new:
the main classifier and the auxiliary heads are built for the dataset's classes, so a
source's 1001-class Slim head never leaks into them.

Example:

```python
source = read_source("torchvision:googlenet-1378be20.pth")
config = resolve_config(TrainConfig(dataset="imagefolder", data_dir="photos"), source)
model = build_model(config, (224, 224, 3), 5, **builder_overrides(config, source, 3))
summary = load_backbone(model, source)
print(summary.text())  # loaded 342 of 366 weight tensors; new: main classifier (5 classes), ...
```
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import keras
import numpy as np

from keras_inception import registry
from keras_inception.convert import source_module
from keras_inception.pretrained import slim, torchvision
from training.config import TrainConfig
from training.fields import ConfigError
from training.workdir import read_json, read_run_config

# The TrainConfig fields that the source decides.
ARCHITECTURE_FIELDS = (
    "model",
    "stem",
    "width_multiplier",
    "min_depth",
    "bottleneck_ratio",
    "specs",
)
# Builder arguments that are not architecture (the run decides them).
_RUN_ARGUMENTS = (
    "include_top",
    "pooling",
    "classes",
    "classifier_activation",
    "input_shape",
    "input_tensor",
    "aux_logits",
    "weights",
    "name",
    "variant",
)
# Layers of the classifiers: re-created for the dataset's classes, never loaded.
HEAD_LAYER = re.compile(r"^(main|predictions|aux\d*)($|_)")
# The normalization each kind of source's weights expects (`include_preprocessing`).
PREPROCESSING = {"torchvision": "torch", "slim": "inception"}
ARCHITECTURE_SUFFIX = ".architecture.json"


@dataclasses.dataclass
class InitSource:
    """A loaded SOURCE of `--init-weights`.

    Attributes:
        spec: str. What the user passed.
        kind: str. "workdir", "keras", "weights", "torchvision" or "slim".
        model: keras.Model. The source's network with its weights (any input size,
            with or without classifiers).
        architecture: dict. The TrainConfig fields of `ARCHITECTURE_FIELDS`.
        builder_options: dict. Further builder keyword arguments (padding, pools,
            `transform_input`, dropout).
        preprocessing: str. The normalization its weights expect: "torch" (ImageNet
            mean and std on x/255) or "inception" (x/127.5 - 1).
    """

    spec: str
    kind: str
    model: keras.Model
    architecture: dict[str, Any]
    builder_options: dict[str, Any]
    preprocessing: str


@dataclasses.dataclass(frozen=True)
class InitSummary:
    """What `load_backbone` did; `text()` is the line `train` prints."""

    spec: str
    loaded: int
    total: int
    classes: int
    aux: tuple[str, ...]
    channels: str | None = None
    preprocessing: str = "inception"
    builder_options: dict = dataclasses.field(default_factory=dict)

    def text(self) -> str:
        new = [f"main classifier ({self.classes} classes)", *self.aux]
        line = f"loaded {self.loaded} of {self.total} weight tensors; new: {', '.join(new)}"
        if self.channels:
            line += f"; {self.channels}"
        return line

    def as_metrics(self) -> dict:
        """metrics.json's `init_weights` (read back when the workdir is a source)."""
        return {
            "source": self.spec,
            "summary": self.text(),
            "loaded": self.loaded,
            "total": self.total,
            "preprocessing": self.preprocessing,
            "builder_options": dict(self.builder_options),
        }


def read_source(spec: str) -> InitSource:
    """Reads SOURCE `spec` (see the module docstring).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a file of no kind we read, or whose architecture cannot be told.
    """
    kind, _, rest = spec.partition(":")
    if kind in PREPROCESSING and rest:
        return _from_converter(spec, kind, rest)
    if not os.path.exists(spec):
        raise FileNotFoundError(f"init_weights {spec!r} does not exist")
    if os.path.isdir(spec):
        return _from_workdir(spec, spec)
    if spec.endswith(".weights.h5"):
        return _from_weights_file(spec)
    if spec.endswith(".keras"):
        folder = os.path.dirname(os.path.abspath(spec))
        if os.path.isfile(os.path.join(folder, "config.json")):
            return _from_workdir(spec, folder, model_path=spec)
        return _from_keras_file(spec)
    raise ValueError(
        f"init_weights {spec!r} is not a training workdir, a .keras file, a .weights.h5 "
        "file, torchvision:FILE or slim:FILE"
    )


def _registry_name(builder_name: str, kwargs: dict) -> str:
    if builder_name == "build_inception_v2" and kwargs.get("variant") == "bn_inception":
        return "bn_inception"
    return builder_name.removeprefix("build_")


def _split_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """Builder kwargs -> (architecture fields, builder options)."""
    arch = {name: kwargs[name] for name in ARCHITECTURE_FIELDS[1:] if name in kwargs}
    options = {
        k: v for k, v in kwargs.items() if k not in _RUN_ARGUMENTS and k not in ARCHITECTURE_FIELDS
    }
    return arch, options


def _default_architecture(model: str, **fields: Any) -> dict:
    defaults = TrainConfig()
    arch = {name: getattr(defaults, name) for name in ARCHITECTURE_FIELDS}
    arch.update({"model": model, "stem": registry.stems(model)[0], **fields})
    return arch


def _from_converter(spec: str, kind: str, path: str) -> InitSource:
    converter = source_module(kind).CONVERTER  # its `read` raises FileNotFoundError
    state = converter.read(path)
    name = converter.detect(state)
    if name is None:
        raise ValueError(f"init_weights {spec!r} holds no {converter.label} network we know")
    # torchvision's pretrained models run with transform_input on; no classifier is read.
    options = {"transform_input": True} if kind == "torchvision" else {}
    kwargs = converter.builder_kwargs(name, include_top=False, **options)
    model = converter.builders[name](**kwargs)
    converter.fill(name, model, state, path=path, include_top=False, **options)
    builder_name = converter.builders[name].__name__
    arch, builder_options = _split_kwargs(kwargs)
    return InitSource(
        spec,
        kind,
        model,
        _default_architecture(_registry_name(builder_name, kwargs), **arch),
        builder_options,
        PREPROCESSING[kind],
    )


def architecture_path(weights_path: str) -> str:
    """The `.architecture.json` file that `python -m keras_inception.convert` writes
    beside `weights_path` (`x.weights.h5` -> `x.architecture.json`)."""
    return weights_path.removesuffix(".weights.h5") + ARCHITECTURE_SUFFIX


def _from_weights_file(spec: str) -> InitSource:
    path = architecture_path(spec)
    if not os.path.isfile(path):
        raise ValueError(
            f"init_weights {spec!r} has no {os.path.basename(path)} beside it, which says its "
            "architecture; convert the weights again with python -m keras_inception.convert"
        )
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    kwargs = dict(record["kwargs"])
    if kwargs.get("input_shape") is not None:
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
    name = _registry_name(record["builder"], kwargs)
    build_kwargs = {k: v for k, v in kwargs.items() if k != "variant"}
    model = registry.get_model(name, **build_kwargs, weights=spec)
    arch, options = _split_kwargs(kwargs)
    preprocessing = record.get("preprocessing") or PREPROCESSING.get(record.get("source"))
    return InitSource(
        spec, "weights", model, _default_architecture(name, **arch), options, preprocessing
    )


def _from_workdir(spec: str, workdir: str, model_path: str | None = None) -> InitSource:
    config = read_run_config(workdir)
    if config is None:
        raise ValueError(f"init_weights {spec!r} is a folder without a run's config.json")
    if model_path is None:
        candidates = [os.path.join(workdir, f) for f in ("model.keras", "inference.keras")]
        model_path = next((p for p in candidates if os.path.isfile(p)), None)
        if model_path is None:
            raise ValueError(
                f"init_weights {spec!r} holds no model.keras or inference.keras: the run has "
                "not finished"
            )
    model = keras.saving.load_model(model_path, compile=False)
    side = model.input_shape[1]
    arch = {name: getattr(config, name) for name in ARCHITECTURE_FIELDS}
    if arch["stem"] is None:  # build_model's rule
        arch["stem"] = "small" if side is not None and side <= 64 else "imagenet"
    metrics_path = os.path.join(workdir, "metrics.json")
    record = read_json(metrics_path).get("init_weights") if os.path.isfile(metrics_path) else None
    options = dict((record or {}).get("builder_options", {}))
    preprocessing = (record or {}).get("preprocessing", "inception")
    return InitSource(spec, "workdir", model, arch, options, preprocessing)


def _from_keras_file(spec: str) -> InitSource:
    model = keras.saving.load_model(spec, compile=False)
    name = model.name
    if name not in registry.list_models():
        raise ValueError(
            f"init_weights {spec!r} holds a model named {name!r}, not one of "
            f"{registry.list_models()}; pass its training workdir instead"
        )
    names = {layer.name for layer in model.layers}
    option_sets = [{}]
    for converter in (torchvision.CONVERTER, slim.CONVERTER):
        for source_name, options in converter.options.items():
            kwargs = {k: v for k, v in options.items() if k != "variant"}
            if _registry_name(converter.builders[source_name].__name__, options) == name:
                option_sets.append(kwargs)
    if "transform_input" in names:
        option_sets = [{**options, "transform_input": True} for options in option_sets]
    wanted = _backbone_shapes(model)
    for stem in registry.stems(name):
        for options in option_sets:
            try:
                candidate = registry.get_model(
                    name, input_shape=model.input_shape[1:], include_top=False, stem=stem, **options
                )
            except ValueError:
                continue
            if _backbone_shapes(candidate) == wanted:
                arch = _default_architecture(name, stem=stem)
                return InitSource(spec, "keras", model, arch, dict(options), "inception")
    raise ValueError(
        f"cannot tell the architecture of init_weights {spec!r} (a {name} whose widths or "
        "options are not the defaults); pass its training workdir instead"
    )


def _backbone_shapes(model: keras.Model) -> dict[str, list[tuple]]:
    return {
        layer.name: [tuple(w.shape) for w in layer.weights]
        for layer in model.layers
        if layer.weights and not HEAD_LAYER.match(layer.name)
    }


def resolve_config(config: TrainConfig, source: InitSource) -> TrainConfig:
    """`config` with the source's architecture (`ARCHITECTURE_FIELDS`).

    Raises:
        training.fields.ConfigError: a field set to something other than its default
            that differs from the source's (one line naming both values).
    """
    defaults = TrainConfig()
    changes = {}
    for name in ARCHITECTURE_FIELDS:
        ours, theirs = getattr(config, name), source.architecture[name]
        if ours != theirs and ours != getattr(defaults, name):
            raise ConfigError(
                {name: ours},
                f"contradicts init_weights {source.spec!r}, whose {name} is {theirs!r}",
            )
        changes[name] = theirs
    return dataclasses.replace(config, **changes)


def builder_overrides(config: TrainConfig, source: InitSource, channels: int) -> dict[str, Any]:
    """The keyword arguments of `training.model_setup.build_model` beyond `config` that
    give the source's network for data of `channels` channels: its builder options (the
    config's dropout wins over the source's) and `include_preprocessing`.

    torchvision's `transform_input` needs 3 channels; on other data it is left out and
    the preprocessing is "inception" (x/127.5 - 1), which is what ImageNet's mean and std
    followed by `transform_input` compute.

    Example:
    >>> source = InitSource("torchvision:g.npz", "torchvision", None, {},
    ...                     {"transform_input": True}, "torch")
    >>> builder_overrides(TrainConfig(), source, 1)
    {'include_preprocessing': 'inception'}
    """
    options = dict(source.builder_options)
    if config.dropout is not None:
        options.pop("dropout", None)
    preprocessing = source.preprocessing
    if channels != 3 and options.get("transform_input"):
        del options["transform_input"]
        preprocessing = "inception"
    return {**options, "include_preprocessing": preprocessing}


def head_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The classifier layers (main classifier, auxiliary heads) of `model`."""
    return [layer for layer in model.layers if HEAD_LAYER.match(layer.name)]


def adapt_input_kernel(kernel: np.ndarray, channels: int) -> np.ndarray:
    """A first-conv kernel `(kh, kw, in, ...)` for `channels` input channels, as timm's
    `adapt_input_conv`: to 1 channel, the sum over the input channels; from 1 to N, the
    kernel repeated N times over 1/N; from 3 to N > 1, repeated to N over 3/N.

    Example:
    >>> adapt_input_kernel(np.ones((1, 1, 3, 2)), 1)[..., 0].tolist()
    [[[3.0]]]
    """
    source = kernel.shape[2]
    if channels == source:
        return kernel
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    if source not in (1, 3):
        raise ValueError(
            f"cannot adapt a first convolution of {source} input channels to {channels}; "
            "only 1- and 3-channel sources are adapted"
        )
    repeats = -(-channels // source)
    return np.concatenate([kernel] * repeats, axis=2)[:, :, :channels] * (source / channels)


def _first_conv(model: keras.Model) -> keras.layers.Layer | None:
    """The first convolution (Conv2D, or the stem's SeparableConv2D), whose first weight
    is `(kh, kw, in, ...)`."""
    kinds = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)
    return next((layer for layer in model.layers if isinstance(layer, kinds)), None)


def load_backbone(
    model: keras.Model, source: InitSource, overrides: dict | None = None
) -> InitSummary:
    """Copies every backbone weight of `source.model` into `model` by layer name.

    `overrides` are the `builder_overrides` that `model` was built with (recorded in the
    summary, so that a run started from this one builds the same network).

    Raises:
        ValueError: a backbone layer of `model` that the source lacks, or whose weights'
            shapes differ (naming the layer and both shapes); a source layer with weights
            that `model` lacks.
    """
    overrides = dict(source.builder_options) if overrides is None else overrides
    theirs = {layer.name: layer for layer in source.model.layers if layer.weights}
    first = _first_conv(model)
    loaded = 0
    channels = None
    for layer in model.layers:
        if not layer.weights or HEAD_LAYER.match(layer.name):
            continue
        other = theirs.get(layer.name)
        if other is None or len(other.weights) != len(layer.weights):
            raise ValueError(
                f"layer {layer.name!r} of the model has no counterpart in init_weights "
                f"{source.spec!r}"
            )
        for ours, value in zip(layer.weights, other.get_weights(), strict=True):
            shape = tuple(ours.shape)
            adaptable = layer is first and ours is layer.weights[0]  # (kh, kw, in, ...)
            same_but_channels = value.shape[:2] + value.shape[3:] == shape[:2] + shape[3:]
            if adaptable and same_but_channels and value.shape != shape:
                how = "summed over" if shape[2] == 1 else "repeated over"
                channels = (
                    f"{layer.name} adapted from {value.shape[2]} to {shape[2]} input "
                    f"channels ({how} channels, as timm's adapt_input_conv)"
                )
                value = adapt_input_kernel(value, shape[2])
            if value.shape != shape:
                raise ValueError(
                    f"layer {layer.name!r}: {ours.name} has shape {shape} in the model and "
                    f"{value.shape} in init_weights {source.spec!r}"
                )
            ours.assign(value)
            loaded += 1
    ours_names = {layer.name for layer in model.layers}
    extra = [n for n in theirs if n not in ours_names and not HEAD_LAYER.match(n)]
    if extra:
        raise ValueError(
            f"init_weights {source.spec!r} has layer {extra[0]!r}, which the model lacks"
        )
    heads = head_layers(model)
    main = next(layer for layer in heads if layer.name in ("main", "predictions"))
    aux = tuple(sorted({layer.name.split("_")[0] for layer in heads} - {main.name}))
    return InitSummary(
        spec=source.spec,
        loaded=loaded,
        total=len(model.weights),
        classes=int(main.units),
        aux=aux,
        channels=channels,
        preprocessing=overrides.get("include_preprocessing", source.preprocessing),
        builder_options={k: v for k, v in overrides.items() if k != "include_preprocessing"},
    )


def set_base_frozen(model: keras.Model, frozen: bool) -> None:
    """Freezes (or unfreezes) every layer but the classifiers. A frozen BatchNormalization
    runs in inference mode, also in `fit`: it normalizes with, and keeps, its moving
    statistics."""
    for layer in model.layers:
        if not HEAD_LAYER.match(layer.name):
            layer.trainable = not frozen
