"""Multi-scale feature extraction, like timm's `features_only`.

`feature_model(model)` returns a model whose outputs are the last module of each of the
three last stages (strides 8, 16 and 32 with the ImageNet stems): GoogLeNet's
inception3b / 4e / 5b, InceptionV3's mixed5d / 6e / 7c, BN-Inception's mixed3c / 4e / 5c.
Modules are found by name (`inception<stage><letter>` or `mixed<stage><letter>`), so any
model of this package works, with or without its top and auxiliary heads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras

_MODULE = re.compile(r"^(?:inception|mixed)(\d)([a-z])$")


def _modules(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """Inception module name -> its last layer (the concatenation), in network order."""
    modules = {}
    for layer in model.layers:
        module = layer.name.split("_", 1)[0]
        if _MODULE.match(module):
            modules[module] = layer
    return modules


def default_feature_names(model: keras.Model) -> list[str]:
    """The last module of each of the last three stages of `model`."""
    last_of_stage: dict[str, str] = {}
    for module in _modules(model):
        last_of_stage[_MODULE.match(module).group(1)] = module
    names = list(last_of_stage.values())[-3:]
    if not names:
        raise ValueError(
            f"model {model.name!r} has no Inception modules (layers named "
            "'inception3a_...' or 'mixed5b_...'); pass the layer names explicitly"
        )
    return names


def feature_model(model: keras.Model, names: Sequence[str] | None = None) -> keras.Model:
    """A model of `model`'s input to a dict of feature maps, sharing `model`'s weights.

    Args:
        model: keras.Model. A model built by this package (any head, any stem).
        names: sequence of str or None. Module names (`"mixed6e"`, `"inception4e"`: the
            module's output) or layer names (`"conv4a_relu"`). Defaults to the last
            module of each of the last three stages (strides 8, 16, 32).

    Returns:
        A `keras.Model` whose output is `{name: feature map}`.

    Examples:
    >>> model = build_inception_v3(include_top=False)
    >>> features = feature_model(model)
    >>> {k: v.shape[-1] for k, v in features.output.items()}
    {'mixed5d': 288, 'mixed6e': 768, 'mixed7c': 2048}
    """
    if names is None:
        names = default_feature_names(model)
    if isinstance(names, str) or not names:
        raise ValueError(f"names must be a non-empty sequence of names; received {names!r}")
    modules = _modules(model)
    outputs = {}
    for name in names:
        if name in modules:
            outputs[name] = modules[name].output
            continue
        try:
            outputs[name] = model.get_layer(name).output
        except ValueError:
            raise ValueError(
                f"{name!r} is neither a module nor a layer of {model.name!r}; "
                f"modules: {list(modules)}"
            ) from None
    return keras.Model(model.input, outputs, name=f"{model.name}_features")
