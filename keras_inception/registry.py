"""One registry of model builders: `list_models()` and `get_model(name, **kwargs)`."""

from __future__ import annotations

from collections.abc import Callable

import keras

from keras_inception.googlenet import build_googlenet
from keras_inception.inception_v2 import build_inception_v2
from keras_inception.inception_v3 import build_inception_v3

_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "googlenet": build_googlenet,
    "inception_v2": build_inception_v2,
    "inception_v3": build_inception_v3,
}


def list_models() -> list[str]:
    """Names accepted by `get_model`, sorted."""
    return sorted(_BUILDERS)


def get_model(name: str, **kwargs) -> keras.Model:
    """Builds a registered model: `get_model("googlenet", classes=10)`."""
    return get_builder(name)(**kwargs)


def get_builder(name: str) -> Callable[..., keras.Model]:
    """The builder function registered as `name`."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available models: {list_models()}")
    return _BUILDERS[name]
