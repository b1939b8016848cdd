"""One registry of model builders: `list_models()`, `get_model(name, **kwargs)`, each
model's paper width table, `default_specs(name)`, and its stems, `stems(name)`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import keras

from keras_inception import googlenet, inception_v2, inception_v3
from keras_inception.googlenet import GOOGLENET_SPECS, build_googlenet
from keras_inception.inception_v2 import (
    BN_INCEPTION_SPECS,
    INCEPTION_V2_SPECS,
    build_inception_v2,
)
from keras_inception.inception_v3 import INCEPTION_V3_SPECS, build_inception_v3


@dataclasses.dataclass(frozen=True)
class _Entry:
    builder: Callable[..., keras.Model]
    default_specs: Mapping[str, Any]
    stems: tuple[str, ...]  # accepted `stem=` values; the first is the default


_MODELS: dict[str, _Entry] = {
    "bn_inception": _Entry(
        functools.partial(build_inception_v2, variant="bn_inception"),
        BN_INCEPTION_SPECS,
        inception_v2.ARCHITECTURES["bn_inception"].stems,
    ),
    "googlenet": _Entry(build_googlenet, GOOGLENET_SPECS, googlenet.ARCHITECTURE.stems),
    "inception_v2": _Entry(
        build_inception_v2, INCEPTION_V2_SPECS, inception_v2.ARCHITECTURES["rethinking"].stems
    ),
    "inception_v3": _Entry(build_inception_v3, INCEPTION_V3_SPECS, inception_v3.ARCHITECTURE.stems),
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


def _entry(name: str) -> _Entry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {list_models()}")
    return _MODELS[name]
