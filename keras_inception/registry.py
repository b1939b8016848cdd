"""One registry of model builders: `list_models()`, `get_model(name, **kwargs)`, each
model's paper width table, `default_specs(name)`, its stems, `stems(name)`, and the
`builder.Architecture` that holds them, `architecture(name)`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import keras

from keras_inception import builder, googlenet, inception_v2, inception_v3
from keras_inception.googlenet import build_googlenet
from keras_inception.inception_v2 import build_inception_v2
from keras_inception.inception_v3 import build_inception_v3


@dataclasses.dataclass(frozen=True)
class _Entry:
    builder: Callable[..., keras.Model]
    architecture: builder.Architecture  # its width table, stems and feature taps

    @property
    def default_specs(self) -> Mapping[str, Any]:
        return self.architecture.default_specs

    @property
    def stems(self) -> tuple[str, ...]:  # accepted `stem=` values; the first is the default
        return self.architecture.stems


_MODELS: dict[str, _Entry] = {
    "bn_inception": _Entry(
        functools.partial(build_inception_v2, variant="bn_inception"),
        inception_v2.ARCHITECTURES["bn_inception"],
    ),
    "googlenet": _Entry(build_googlenet, googlenet.ARCHITECTURE),
    "inception_v2": _Entry(build_inception_v2, inception_v2.ARCHITECTURES["rethinking"]),
    "inception_v3": _Entry(build_inception_v3, inception_v3.ARCHITECTURE),
}


def list_models() -> list[str]:
    """Names accepted by `get_model`, sorted."""
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> keras.Model:
    """Builds a registered model: `get_model("googlenet", classes=10)`.

    `"bn_inception"` is `build_inception_v2(variant="bn_inception")`.
    """
    return get_builder(name)(**kwargs)


def get_builder(name: str) -> Callable[..., keras.Model]:
    """The builder function registered as `name`."""
    return _entry(name).builder


def default_specs(name: str) -> Mapping[str, Any]:
    """The width table that `get_model(name)` builds by default: the paper's.

    Example:
    >>> default_specs("googlenet")["3a"].reduce3x3
    96
    """
    return _entry(name).default_specs


def stems(name: str) -> tuple[str, ...]:
    """The `stem=` values that model `name` accepts; the first is its default.

    Example:
    >>> stems("googlenet")
    ('imagenet', 'small', 'small_pool')
    """
    return _entry(name).stems


def architecture(name: str) -> builder.Architecture:
    """The `builder.Architecture` behind model `name`: its tables, stems, feature taps.

    Example:
    >>> [tap.name for tap in architecture("inception_v3").feature_taps]
    ['mixed5d', 'mixed6e', 'mixed7c']
    """
    return _entry(name).architecture


def _entry(name: str) -> _Entry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {list_models()}")
    return _MODELS[name]
