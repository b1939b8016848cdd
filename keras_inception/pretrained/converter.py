"""The one conversion plan every weight source follows: detect, plan, skip, fill, build,
summarize.

A source (torchvision, TF-Slim, keras.applications) is a `Converter` subclass that says,
as data and a few small methods, how its files name the weights of our layers:

- `read(path)`: the file as a flat state dict, tensor name -> numpy array;
- `detect(state)`: which of its networks the state dict holds (`markers`);
- `scope(name, layer_name)` and `tensor_names`: the source tensor of every Keras weight,
  which `plan` turns into a `Source` per weight (`source` adds layout transforms);
- `skip(name, key, ...)`: the tensors left out on purpose (`ignored`, and the auxiliary
  heads or the classifier when they are not asked for);
- `fill(name, model, state, ...)`: assigns the state dict by the plan, strictly
  (`keras_inception.pretrained.common.assign`);
- `build(name, ...)`: the Keras model of the source's architecture (`builders`,
  `options`);
- `summarize(skipped)`: the skipped names, grouped, for a one-line report.

`convert(name, path, ...)` runs them in that order.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import keras
import numpy as np

from keras_inception.pretrained.common import Source, assign

# Keras layer kind -> the suffix our builders append to a conv/BN block's name.
LAYER_SUFFIXES = MappingProxyType(
    {"separable_conv": "_conv", "conv": "_conv", "batch_norm": "_bn", "dense": ""}
)
# InceptionV3's stem (our conv_bn_act names) -> Google's scope names, which TF-Slim's
# checkpoints and torchvision's `Inception3` both use.
INCEPTION_V3_STEM_SCOPES: Mapping[str, str] = MappingProxyType(
    {
        "conv1a": "Conv2d_1a_3x3",
        "conv2a": "Conv2d_2a_3x3",
        "conv2b": "Conv2d_2b_3x3",
        "conv3b": "Conv2d_3b_1x1",
        "conv4a": "Conv2d_4a_3x3",
    }
)


def batch_norm_names(prefix: str, **renamed: str) -> dict[str, str]:
    """`tensor_names["batch_norm"]`: `prefix` + the source's name of each Keras batch
    norm weight (gamma, beta, moving_mean, moving_variance; `renamed` or the same).

    Examples:
    >>> batch_norm_names("{}/BatchNorm/")["moving_mean"]
    '{}/BatchNorm/moving_mean'
    """
    names = ("gamma", "beta", "moving_mean", "moving_variance")
    return {name: prefix + renamed.get(name, name) for name in names}


def layer_kind(layer: keras.layers.Layer) -> str | None:
    """The kind of a weighted layer, a key of `Converter.tensor_names`: "separable_conv",
    "conv", "batch_norm" or "dense"; None for any other layer."""
    if isinstance(layer, keras.layers.SeparableConv2D):
        return "separable_conv"
    if isinstance(layer, keras.layers.Conv2D):
        return "conv"
    if isinstance(layer, keras.layers.BatchNormalization):
        return "batch_norm"
    if isinstance(layer, keras.layers.Dense):
        return "dense"
    return None


def format_call(builder: Callable, kwargs: Mapping[str, Any]) -> str:
    """The Python code that calls `builder` with `kwargs`, for users to paste.

    Examples:
    >>> from keras_inception import build_googlenet
    >>> format_call(build_googlenet, {"classes": 10, "weights": "g.weights.h5"})
    "keras_inception.build_googlenet(classes=10, weights='g.weights.h5')"
    """
    arguments = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    return f"keras_inception.{builder.__name__}({arguments})"


def warn_caller(message: str) -> None:
    """A `UserWarning` that points at the first caller outside this package."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = inspect.currentframe(), 1
    while (
        frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


class Converter:
    """A source of published weights, converted into our builders' models by name.

    Subclasses set the class attributes and implement `read`, `scope` and `ignored`;
    `source` is where they add layout transforms. Everything else is shared.

    Attributes:
        label: str. The source in messages, e.g. "torchvision".
        file_kind: str. What its files are, e.g. "state dict".
        builders: mapping. Network name -> our builder function.
        options: mapping. Network name -> the builder options that give the source's
            architecture.
        markers: mapping. Network name -> a tensor-name prefix that only its files hold.
        aux_prefixes: mapping. Network name -> prefixes of its auxiliary heads' tensors.
        classifier_prefixes: mapping. Network name -> prefixes of its classifier's
            tensors.
        classifier_key: mapping. Network name -> the classifier weight whose
            `classes_axis` gives the number of classes.
        classes_axis: int. That axis: 0 for torch's `(out, in)`, -1 for TensorFlow's.
        tensor_names: mapping. Layer kind (`layer_kind`) -> {Keras attribute: template},
            where `template.format(scope)` is the source tensor's name.
        extra_options: mapping. Source-specific keyword arguments and their defaults
            (e.g. torchvision's `transform_input`).

    Examples:
    >>> from keras_inception.pretrained.torchvision import CONVERTER
    >>> CONVERTER.builder_kwargs("googlenet", include_top=False)["padding"]
    'torch'
    """

    label: str = ""
    file_kind: str = "state dict"
    builders: Mapping[str, Callable[..., keras.Model]] = MappingProxyType({})
    options: Mapping[str, Mapping[str, Any]] = MappingProxyType({})
    markers: Mapping[str, str] = MappingProxyType({})
    aux_prefixes: Mapping[str, tuple[str, ...]] = MappingProxyType({})
    classifier_prefixes: Mapping[str, tuple[str, ...]] = MappingProxyType({})
    classifier_key: Mapping[str, str] = MappingProxyType({})
    classes_axis: int = 0
    tensor_names: Mapping[str, Mapping[str, str]] = MappingProxyType({})
    extra_options: Mapping[str, Any] = MappingProxyType({})

    # --- what a source implements ------------------------------------------------------

    def read(self, path: str) -> dict[str, np.ndarray]:
        """The file at `path` as a state dict (tensor name -> array)."""
        raise NotImplementedError

    def scope(self, name: str, layer_name: str) -> str | None:
        """The source's name of our conv/BN block or dense layer `layer_name` (without
        its `_conv`/`_bn` suffix), inserted into `tensor_names`' templates; None: the
        source has no such layer, and its weights keep their values."""
        raise NotImplementedError

    def ignored(self, key: str) -> bool:
        """True for a tensor that is never a model weight (e.g. `num_batches_tracked`)."""
        return False

    def source(self, name: str, layer, attribute: str, key: str, **options: Any) -> Source:
        """The `Source` of `layer.<attribute>`, whose tensor is `key`; subclasses add
        transforms (layouts) and fills."""
        return Source(key)

    def validate(self, name: str, *, aux_logits: bool, include_top: bool, **options: Any) -> None:
        """Raises ValueError for options the network does not have."""

    def option_kwargs(self, **options: Any) -> dict[str, Any]:
        """The builder keyword arguments that `extra_options` add."""
        return {}

    def default_classes(self, **options: Any) -> int:
        """Classes of the published ImageNet files."""
        return 1000

    def file_classes(self, name: str, state: Mapping, path: str, **options: Any) -> int:
        """The number of classes of the file's classifier."""
        key = self.classifier_key[name]
        if key not in state:
            raise ValueError(f"{path!r} has no classifier tensor {key!r}")
        return int(np.shape(state[key])[self.classes_axis])

    def check_aux(self, name: str, state: Mapping, path: str) -> None:
        """Raises ValueError when the file lacks an auxiliary head."""
        for prefix in self.aux_prefixes.get(name, ()):
            if not any(key.startswith(prefix) for key in state):
                raise ValueError(
                    f"{path!r} has no auxiliary head tensors ({prefix}*); pass aux_logits=False"
                )

    # --- shared ------------------------------------------------------------------------

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.markers)

    def check_name(self, name: str) -> None:
        if name not in self.markers:
            raise ValueError(f"unknown {self.label} model {name!r}; available: {list(self.models)}")

    def description(self, name: str) -> str:
        """E.g. "a torchvision googlenet state dict"."""
        return f"a {self.label} {name} {self.file_kind}"

    def _options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(self.extra_options))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} for {self.label} weights; expected one of "
                f"{sorted(self.extra_options)}"
            )
        return {**self.extra_options, **options}

    def builder_kwargs(
        self,
        name: str,
        *,
        aux_logits: bool = False,
        input_shape: tuple | None = None,
        classifier_activation: str | None = None,
        include_top: bool = True,
        pooling: str | None = None,
        classes: int | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """The keyword arguments of `builders[name]` that give the source's network.

        `classes` defaults to `default_classes(**options)`; `options` are the source's
        `extra_options`.
        """
        self.check_name(name)
        options = self._options(options)
        if aux_logits and not include_top:
            raise ValueError(
                f"aux_logits=True needs include_top=True; received include_top={include_top!r}"
            )
        self.validate(name, aux_logits=aux_logits, include_top=include_top, **options)
        kwargs: dict[str, Any] = dict(self.options[name])
        kwargs.update(self.option_kwargs(**options))
        if aux_logits:
            kwargs["aux_logits"] = True
        if input_shape is not None:
            kwargs["input_shape"] = tuple(input_shape)
        if include_top:
            kwargs["classes"] = int(self.default_classes(**options) if classes is None else classes)
            kwargs["classifier_activation"] = classifier_activation
        else:
            kwargs["include_top"] = False
            if pooling is not None:
                kwargs["pooling"] = pooling
        return kwargs

    def module_functions(self) -> tuple[Callable[..., Any], ...]:
        """`(builder_kwargs, builder_call, plan, convert)`: the methods that a source's
        module offered as functions before `Converter` existed, kept for its callers."""
        return self.builder_kwargs, self.builder_call, self.plan, self.convert

    def builder_call(self, name: str, **kwargs: Any) -> str:
        """`builder_kwargs` as the Python code a user pastes (`format_call`), e.g.
        `"keras_inception.build_googlenet(...)"`."""
        return format_call(self.builders[name], self.builder_kwargs(name, **kwargs))

    def build(self, name: str, **kwargs: Any) -> keras.Model:
        """The source's architecture `name` in Keras, with random weights."""
        return self.builders[name](**self.builder_kwargs(name, **kwargs))

    def detect(self, state: Mapping[str, Any]) -> str | None:
        """The network whose tensors `state` holds (by `markers`), or None."""
        for name, marker in self.markers.items():
            if any(key.startswith(marker) for key in state):
                return name
        return None

    def plan(self, name: str, model: keras.Model, **options: Any) -> dict[str, Source | None]:
        """Keras weight path -> `Source` (None: keeps its value) for every weight."""
        self.check_name(name)
        options = self._options(options)
        sources: dict[str, Source | None] = {}
        for layer in model.layers:
            if not layer.weights:
                continue
            kind = layer_kind(layer)
            if kind not in self.tensor_names:
                raise ValueError(
                    f"layer {layer.name!r} ({type(layer).__name__}) has weights but no "
                    f"{self.label} counterpart"
                )
            scope = self.scope(name, layer.name.removesuffix(LAYER_SUFFIXES[kind]))
            if scope is None:
                sources.update(dict.fromkeys(w.path for w in layer.weights))
                continue
            for attribute, template in self.tensor_names[kind].items():
                variable = getattr(layer, attribute, None)
                if variable is not None:
                    key = template.format(scope)
                    sources[variable.path] = self.source(name, layer, attribute, key, **options)
        return sources

    def skip(self, name: str, key: str, *, aux_logits: bool, include_top: bool) -> bool:
        """True for a source tensor deliberately left out."""
        return (
            self.ignored(key)
            or (not aux_logits and key.startswith(self.aux_prefixes.get(name, ())))
            or (not include_top and key.startswith(self.classifier_prefixes.get(name, ())))
        )

    def fill(
        self,
        name: str,
        model: keras.Model,
        state: Mapping[str, np.ndarray],
        *,
        path: str,
        aux_logits: bool = False,
        include_top: bool = True,
        **options: Any,
    ) -> list[str]:
        """Assigns `state` to `model` by `plan`, strictly; returns the skipped names."""
        return assign(
            model,
            state,
            self.plan(name, model, **options),
            path=path,
            skip=lambda key: self.skip(name, key, aux_logits=aux_logits, include_top=include_top),
            description=self.description(name),
        )

    def summarize(self, names: Iterable[str]) -> str:
        """`"num_batches_tracked x59, aux1.* x9"`-style summary of skipped tensor names:
        tensors that are never weights (`ignored`) by their last component, those of an
        auxiliary head or classifier by its prefix, any other by its name; largest first."""
        prefixes = {
            p
            for group in (self.aux_prefixes, self.classifier_prefixes)
            for ps in group.values()
            for p in ps
        }
        groups: dict[str, int] = {}
        for key in names:
            if self.ignored(key):
                group = key.replace("/", ".").rsplit(".", 1)[-1]
            else:
                group = next((f"{p}*" for p in sorted(prefixes) if key.startswith(p)), key)
            groups[group] = groups.get(group, 0) + 1
        ordered = sorted(groups.items(), key=lambda item: (-item[1], item[0]))
        return ", ".join(f"{group} x{count}" for group, count in ordered) or "none"

    def convert(
        self,
        name: str,
        path: str | os.PathLike,
        *,
        aux_logits: bool = False,
        input_shape: tuple | None = None,
        classifier_activation: str | None = None,
        include_top: bool = True,
        pooling: str | None = None,
        **options: Any,
    ) -> tuple[keras.Model, list[str]]:
        """Reads `path`, checks it holds network `name`, builds the model and fills it.

        Args:
            name: str. The network, one of `models`.
            path: str or PathLike. The file (or checkpoint) to read.
            aux_logits: bool. Add the network's auxiliary head(s), from the file; the
                model then returns `{"main", "aux"}` (`{"main", "aux1", "aux2"}` for
                GoogLeNet). Defaults to False.
            input_shape: tuple or None. `(height, width, 3)`; None is the network's
                default size (224x224; 299x299 for InceptionV3). `(None, None, 3)` takes
                any size without auxiliary heads. Defaults to None.
            classifier_activation: str or None. None returns logits; "softmax" returns
                probabilities. Defaults to None.
            include_top: bool. Keep the classifier; False skips the file's classifier
                tensors. Defaults to True.
            pooling: None, "avg" or "max". Global pooling when `include_top=False`.
            **options: the source's `extra_options`.

        Returns:
            `(model, skipped)`: the Keras model and the sorted names of the source
            tensors left out (`skip`).

        Raises:
            FileNotFoundError: if `path` does not exist.
            ValueError: for another network's file, or one that does not fit (one line
                naming the file and the first tensor that does not fit).

        Examples:
        >>> from keras_inception.pretrained.slim import CONVERTER
        >>> model, skipped = CONVERTER.convert("inception_v3", "inception_v3.ckpt",
        ...                                    include_background=False)  # doctest: +SKIP
        """
        path = os.fspath(path)
        arguments = dict(aux_logits=aux_logits, include_top=include_top, **options)
        self.builder_kwargs(name, **arguments)  # validates before the file is read
        state = self.read(path)
        found = self.detect(state)
        if found != name:
            looks = self.description(found) if found else f"no {self.label} network we know"
            raise ValueError(
                f"{path!r} is not {self.description(name)}: it has no "
                f"{self.markers[name]!r}* tensor (it looks like {looks})"
            )
        classes = self.file_classes(name, state, path, **options) if include_top else None
        if aux_logits:
            self.check_aux(name, state, path)
        model = self.build(
            name,
            input_shape=input_shape,
            classifier_activation=classifier_activation,
            pooling=pooling,
            classes=classes,
            **arguments,
        )
        return model, self.fill(name, model, state, path=path, **arguments)

    def load(self, name: str, path: str | os.PathLike, **options: Any) -> keras.Model:
        """`convert`'s model alone: network `name` with the weights of `path` (`options`
        as `convert` takes them)."""
        model, _ = self.convert(name, path, **options)
        return model
