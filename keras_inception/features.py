"""Multi-scale feature extraction, like timm's `features_only`.

Each family declares its feature maps in its `builder.Architecture` (`feature_taps`, as
timm's `feature_info`): the last module of each of the three last stages, at strides 8,
16 and 32 with the ImageNet stems (GoogLeNet's inception3b / 4e / 5b, InceptionV3's
mixed5d / 6e / 7c, BN-Inception's mixed3c / 4e / 5c). A model built by this package
carries them, with its own channels and reductions, as `model.feature_info`; a model
loaded from a file is matched against the declared taps of every registered model.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_inception import registry
from keras_inception.builder import FeatureInfo, FeatureTap

# Every Inception module ends in a concatenation named after it (blocks.py).
_MODULE_OUTPUT = "_concat"


def _modules(model: keras.Model) -> dict[str, str]:
    """Module name -> the name of its output layer, in network order."""
    return {
        layer.name.removesuffix(_MODULE_OUTPUT): layer.name
        for layer in model.layers
        if layer.name.endswith(_MODULE_OUTPUT)
        and "_" not in layer.name.removesuffix(_MODULE_OUTPUT)
    }


def feature_taps(model: keras.Model) -> tuple[FeatureInfo | FeatureTap, ...]:
    """The declared feature maps of `model`: `model.feature_info` where a builder of this
    package set it, else the `feature_taps` of the registered model whose tap layers
    `model` holds (a model loaded from a file; its channels are its tensors').

    Example:
    >>> model = build_googlenet(stem="small", input_shape=(8, 8, 1), include_top=False,
    ...                         width_multiplier=0.25)
    >>> [(info.name, info.channels, info.reduction) for info in feature_taps(model)]
    [('inception3b', 120, 1), ('inception4e', 208, 2), ('inception5b', 256, 4)]
    """
    info = getattr(model, "feature_info", None)
    if info:
        return tuple(info)
    present = {layer.name for layer in model.layers}
    for name in registry.list_models():
        taps = registry.architecture(name).feature_taps
        if taps and all(tap.layer in present for tap in taps):
            return taps
    raise ValueError(
        f"model {model.name!r} has none of the declared feature maps of "
        f"{registry.list_models()}; pass the module or layer names explicitly"
    )


def default_feature_names(model: keras.Model) -> list[str]:
    """The names of `model`'s declared feature maps (`feature_taps`)."""
    return [tap.name for tap in feature_taps(model)]


def feature_model(model: keras.Model, names: Sequence[str] | None = None) -> keras.Model:
    """A model of `model`'s input to a dict of feature maps, sharing `model`'s weights.

    Args:
        model: keras.Model. A model built by this package (any head, any stem).
        names: sequence of str or None. Module names (`"mixed6e"`, `"inception4e"`: the
            module's output) or layer names (`"conv4a_relu"`). Defaults to the model's
            declared feature maps (`feature_taps`): the last module of each of the last
            three stages (strides 8, 16, 32).

    Returns:
        A `keras.Model` whose output is `{name: feature map}`.

    Examples:
    >>> model = build_inception_v3(include_top=False, stem="small", width_multiplier=0.25)
    >>> features = feature_model(model)
    >>> {k: v.shape[-1] for k, v in features.output.items()}
    {'mixed5d': 72, 'mixed6e': 192, 'mixed7c': 512}
    """
    modules = _modules(model)
    if names is None:
        layer_names = {tap.name: tap.layer for tap in feature_taps(model)}
    elif isinstance(names, str) or not names:
        raise ValueError(f"names must be a non-empty sequence of names; received {names!r}")
    else:
        layer_names = {name: modules.get(name, name) for name in names}
    outputs = {}
    for name, layer in layer_names.items():
        try:
            outputs[name] = model.get_layer(layer).output
        except ValueError:
            raise ValueError(
                f"{name!r} is neither a module nor a layer of {model.name!r}; "
                f"modules: {list(modules)}"
            ) from None
    return keras.Model(model.input, outputs, name=f"{model.name}_features")
