"""The one generic builder behind every public `build_*` function.

A family (GoogLeNet, InceptionV2, InceptionV3) describes itself with an `Architecture`:
its default width table, stems, minimum input size and a `body` that wires the modules.
`build` does everything that follows the conventions of `keras.applications`: argument
checks, the input, the classifier head or pooling, auxiliary outputs, the model, weights.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import keras
from keras import layers

from keras_inception import heads
from keras_inception.blocks import StemLayer, apply_module, apply_stem, reduction_padding
from keras_inception.layers import ConvStyle, apply_transform_input
from keras_inception.preprocessing_layers import apply_preprocessing, check_preprocessing
from keras_inception.specs import scale_table, validate_table, validate_width_controls

POOLINGS = (None, "avg", "max")


class FeatureTap(NamedTuple):
    """One feature map a family offers `feature_model`, declared as timm's `feature_info`.

    Args:
        name: str. Its key in `feature_model`'s output, e.g. `"mixed5d"`.
        module: str. The width table's key of the module whose output it is, e.g. `"5d"`:
            that module's `out_channels` is the map's width.
        layer: str. The layer whose output it is, e.g. `"mixed5d_concat"`.
        stride: int. Its downsampling relative to the stem's output (1, 2, 4).
    """

    name: str
    module: str
    layer: str
    stride: int


class FeatureInfo(NamedTuple):
    """A feature map of a built model (`model.feature_info`), as timm's `feature_info`.

    Args:
        name: str. Its key in `feature_model`'s output.
        layer: str. The layer whose output it is.
        channels: int. Its width.
        reduction: int. The product of the strides in front of it (8, 16, 32 with the
            ImageNet stems): the input side over the map side where every layer pads
            "same".
    """

    name: str
    layer: str
    channels: int
    reduction: int


def module_taps(prefix: str, strides: Mapping[str, int]) -> tuple[FeatureTap, ...]:
    """`FeatureTap`s of modules named `f"{prefix}{key}"` (blocks name their output layer
    `f"{name}_concat"`), from table key -> stride relative to the stem's output.

    Example:
    >>> module_taps("mixed", {"5d": 1})
    (FeatureTap(name='mixed5d', module='5d', layer='mixed5d_concat', stride=1),)
    """
    return tuple(
        FeatureTap(f"{prefix}{key}", key, f"{prefix}{key}_concat", stride)
        for key, stride in strides.items()
    )


def stem_strides(stem_layers: Mapping[str, tuple[StemLayer, ...]]) -> dict[str, int]:
    """Stem name -> the product of its layers' strides.

    Example:
    >>> stem_strides({"imagenet": (StemLayer("conv1", "conv", 7, 2),
    ...                            StemLayer("pool1", "maxpool", 3, 2))})
    {'imagenet': 4}
    """
    return {
        stem: math.prod(layer.strides for layer in stack) for stem, stack in stem_layers.items()
    }


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a family hands the generic builder.

    Args:
        family: str. Name used in messages, e.g. `"googlenet"`.
        default_size: int. Default square input side with the ImageNet stem.
        default_specs: Mapping. The paper's width table.
        stems: tuple of str. Accepted `stem=` values; the first is the default.
        minimum_size: callable `(stem, aux_logits) -> int`: the smallest input side.
        body: callable `(x, table, *, stem, style, **options) -> (features, taps)`, where
            `taps` maps each auxiliary output name to the feature map its head reads.
        aux_head: callable `(tap, *, classes, style, classifier_activation, name, **options)`.
        load_weights: callable `(model, weights, include_top)` for `weights=` other than
            None; the default loads a file written by `model.save_weights`.
        feature_taps: tuple of `FeatureTap`. The maps `feature_model` returns by default:
            the last module of each of the last three stages. Defaults to none.
        stem_strides: mapping. Stem name -> its total stride (`stem_strides(...)`), for
            the reductions of `feature_info`. Defaults to empty.
    """

    family: str
    default_size: int
    default_specs: Mapping[str, Any]
    stems: tuple[str, ...]
    minimum_size: Callable[[str, bool], int]
    body: Callable[..., Any]
    aux_head: Callable[..., Any]
    load_weights: Callable[..., None] | None = None
    feature_taps: tuple[FeatureTap, ...] = ()
    stem_strides: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def feature_info(self, table: Mapping[str, Any], stem: str) -> tuple[FeatureInfo, ...]:
        """The declared feature maps of the model built from the final `table` and `stem`."""
        return tuple(
            FeatureInfo(
                tap.name,
                tap.layer,
                table[tap.module].out_channels,
                self.stem_strides[stem] * tap.stride,
            )
            for tap in self.feature_taps
        )


def same_padding_minimum_size(
    stem_strides: Mapping[str, int], aux_strides: Mapping[str, int], aux_map: int = 4
) -> Callable[[str, bool], int]:
    """`minimum_size` for a family padded "same" everywhere (GoogLeNet).

    The input must span a whole cell of the deepest map (stride `4 * stem_strides[stem]`),
    and, with auxiliary heads, `aux_map` cells of the map their heads read (stride
    `aux_strides[stem]`).
    """

    def minimum_size(stem: str, aux_logits: bool) -> int:
        size = stem_strides[stem] * 4
        if aux_logits:
            size = max(size, aux_map * aux_strides[stem])
        return size

    return minimum_size


def output_side(side: int, kernel: int, strides: int, padding: str) -> int:
    """Side of a conv/pool output: `ceil(side / strides)` ("same") or
    `(side - kernel) // strides + 1` ("valid"; 0 when the window does not fit)."""
    if padding == "same":
        return -(-side // strides)
    return (side - kernel) // strides + 1 if side >= kernel else 0


def searched_minimum_size(
    sides: Callable[[str, int], tuple[int, int]], aux_map: int, limit: int = 4096
) -> Callable[[str, bool], int]:
    """`minimum_size` for a family with "valid" padding, computed from its layers.

    `sides(stem, n)` returns `(aux tap side, final side)` for an `n`x`n` input, following
    the family's kernels and strides. The minimum is the smallest `n` whose final map is
    at least 1x1 and, with auxiliary heads, whose tapped map is at least `aux_map` wide.
    """

    def minimum_size(stem: str, aux_logits: bool) -> int:
        for n in range(1, limit + 1):
            tap, final = sides(stem, n)
            if final >= 1 and (not aux_logits or tap >= aux_map):
                return n
        raise ValueError(f"no input side up to {limit} fits stem={stem!r}")

    return minimum_size


def _check_choice(label: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{label} must be one of {list(choices)}; received {value!r}")


def _resolve_input_shape(
    arch: Architecture,
    input_shape: tuple | None,
    input_tensor: Any,
    *,
    include_top: bool,
    stem: str,
    aux_logits: bool,
) -> tuple:
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            f"{arch.family} is built channels_last only; keras.config.image_data_format() "
            f"is {keras.config.image_data_format()!r}"
        )
    if input_tensor is not None:
        tensor_shape = tuple(input_tensor.shape[1:])
        if input_shape is not None and tuple(input_shape) != tensor_shape:
            raise ValueError(
                f"input_shape {tuple(input_shape)} does not match input_tensor's shape "
                f"{tensor_shape}"
            )
        input_shape = tensor_shape
    if input_shape is None:
        side = arch.default_size if include_top else None
        input_shape = (side, side, 3)
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels); received {input_shape!r}")
    for dim in shape:
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ValueError(
                f"input_shape entries must be positive integers or None; received {shape}"
            )
    if shape[2] is None:
        raise ValueError(f"input_shape needs a known channel count; received {shape}")
    minimum = arch.minimum_size(stem, aux_logits)
    if any(dim is not None and dim < minimum for dim in shape[:2]):
        aux = " with auxiliary heads" if aux_logits else ""
        raise ValueError(
            f"input_shape must be at least {minimum}x{minimum} for {arch.family} "
            f"(stem={stem!r}){aux}; received {shape}"
        )
    if aux_logits and None in shape[:2]:
        raise ValueError(f"auxiliary heads need a fixed input size; received input_shape {shape}")
    return shape


def _check_weights(arch: Architecture, weights: Any) -> None:
    if weights is None:
        return
    if not isinstance(weights, str | os.PathLike):
        raise ValueError(
            f"weights must be None, 'imagenet' or a path to a weights file; received {weights!r}"
        )
    if weights == "imagenet":
        if arch.load_weights is None:
            raise ValueError(
                f"no ImageNet weights are published for {arch.family} in Keras; "
                "received weights='imagenet'. Pass weights=None or a path to a weights file."
            )
        return
    if not os.path.exists(weights):
        raise FileNotFoundError(f"weights file not found: {os.fspath(weights)!r}")


def _load_weights_file(model: keras.Model, weights: str, include_top: bool) -> None:
    model.load_weights(weights)


# The keras.applications arguments that every public builder takes and passes to `build`
# as they are (`build_googlenet` documents them).
COMMON_ARGUMENTS = (
    "include_top",
    "weights",
    "input_tensor",
    "input_shape",
    "pooling",
    "classes",
    "classifier_activation",
    "aux_logits",
    "stem",
    "width_multiplier",
    "min_depth",
    "bottleneck_ratio",
    "specs",
    "dropout",
    "name",
    "include_preprocessing",
)


def common_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The `COMMON_ARGUMENTS` of a public builder's `locals()`, as `build`'s keywords.

    >>> arguments = {**dict.fromkeys(COMMON_ARGUMENTS), "padding": "same"}
    >>> "padding" in common_arguments(arguments), len(common_arguments(arguments))
    (False, 16)
    """
    return {key: arguments[key] for key in COMMON_ARGUMENTS}


def build(
    arch: Architecture,
    *,
    include_top: bool,
    weights: str | None,
    input_tensor: Any,
    input_shape: tuple | None,
    pooling: str | None,
    classes: int,
    classifier_activation: str | None,
    aux_logits: bool,
    stem: str | None,
    width_multiplier: float,
    min_depth: int,
    bottleneck_ratio: float,
    specs: Mapping[str, Any] | None,
    dropout: float,
    name: str,
    style: ConvStyle,
    body_options: Mapping[str, Any] | None = None,
    aux_options: Mapping[str, Any] | None = None,
    include_preprocessing: str | None = None,
) -> keras.Model:
    """Builds `arch` in the conventions of keras.applications; see `build_googlenet`."""
    check_preprocessing(include_preprocessing)
    stem = arch.stems[0] if stem is None else stem
    _check_choice("stem", stem, arch.stems)
    _check_choice("pooling", pooling, POOLINGS)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive integer; received {classes!r}")
    if aux_logits and not include_top:
        raise ValueError(
            "aux_logits=True needs include_top=True (auxiliary heads are classifiers); "
            f"received include_top={include_top!r}"
        )
    if not (isinstance(dropout, int | float) and 0 <= dropout < 1):
        raise ValueError(f"dropout must be in [0, 1); received {dropout!r}")
    validate_width_controls(width_multiplier, bottleneck_ratio, min_depth)
    _check_weights(arch, weights)
    table = validate_table(
        arch.default_specs if specs is None else specs, arch.default_specs, arch.family
    )
    table = scale_table(
        table,
        width_multiplier=width_multiplier,
        bottleneck_ratio=bottleneck_ratio,
        min_depth=min_depth,
    )
    shape = _resolve_input_shape(
        arch,
        input_shape,
        input_tensor,
        include_top=include_top,
        stem=stem,
        aux_logits=aux_logits,
    )

    if input_tensor is None:
        img_input = layers.Input(shape=shape, name="image")
        inputs = img_input
    elif keras.backend.is_keras_tensor(input_tensor):
        img_input = input_tensor
        inputs = keras.utils.get_source_inputs(input_tensor)
    else:
        img_input = layers.Input(tensor=input_tensor, shape=shape, name="image")
        inputs = img_input

    x = apply_preprocessing(img_input, include_preprocessing)
    features, taps = arch.body(x, table, stem=stem, style=style, **(body_options or {}))

    if not include_top:
        if pooling == "avg":
            features = layers.GlobalAveragePooling2D(name="avgpool")(features)
        elif pooling == "max":
            features = layers.GlobalMaxPooling2D(name="maxpool")(features)
        outputs = features
    else:
        main = heads.apply_classifier(
            features,
            classes=classes,
            dropout=dropout,
            classifier_activation=classifier_activation,
            name="main" if aux_logits else "predictions",
        )
        if aux_logits:
            outputs = {"main": main}
            for aux_name, tap in taps.items():
                outputs[aux_name] = arch.aux_head(
                    tap,
                    classes=classes,
                    style=style,
                    classifier_activation=classifier_activation,
                    name=aux_name,
                    **(aux_options or {}),
                )
        else:
            outputs = main

    model = keras.Model(inputs, outputs, name=name)
    model.feature_info = arch.feature_info(table, stem)  # as timm's; read by feature_model
    if weights is not None:
        (arch.load_weights or _load_weights_file)(model, weights, include_top)
    return model


def sequential_body(stem_layers: Mapping[str, tuple[StemLayer, ...]], aux_taps: Mapping[str, str]):
    """`Architecture.body` for a stem followed by the table's modules in order
    (InceptionV2 and InceptionV3).

    Args:
        stem_layers: mapping. Stem name -> its layers (`StemLayer`), in order.
        aux_taps: mapping. Table key -> name of the auxiliary output that reads the
            module's output, e.g. `{"6e": "aux"}`.

    Returns:
        A callable `(x, table, *, stem, style, count_include_pad=False,
        transform_input=False) -> (features, taps)`: `count_include_pad` makes the
        average-pool branches count the padding, as torch; `transform_input` starts with
        torchvision's input rescaling.

    Examples:
    >>> from keras_inception.inception_v3 import AUX_TAPS, V3_STEM_LAYERS
    >>> body = sequential_body(V3_STEM_LAYERS, AUX_TAPS)
    >>> callable(body)
    True
    """

    def body(
        x,
        table: Mapping[str, Any],
        *,
        stem: str,
        style: ConvStyle,
        count_include_pad: bool = False,
        transform_input: bool = False,
    ):
        if transform_input:
            x = apply_transform_input(x)
        x = apply_stem(x, table["stem"], stem_layers[stem], style=style)
        taps = {}
        for key, spec in table.items():
            if key == "stem":
                continue
            x = apply_module(
                x, spec, style=style, count_include_pad=count_include_pad, name=f"mixed{key}"
            )
            if key in aux_taps:
                taps[aux_taps[key]] = x
        return x, taps

    return body


def spatial_sides(
    stem_layers: Mapping[str, tuple[StemLayer, ...]],
    default_specs: Mapping[str, Any],
    aux_taps: Mapping[str, str],
) -> Callable[[str, int], tuple[int, int]]:
    """`sides(stem, n)` for `searched_minimum_size`: `(aux tap side, final side)` for an
    `n`x`n` input, following the stem's layers and each grid reduction of the table (a
    3x3/2 window with the module's padding).

    Examples:
    >>> from keras_inception.inception_v3 import AUX_TAPS, INCEPTION_V3_SPECS, V3_STEM_LAYERS
    >>> spatial_sides(V3_STEM_LAYERS, INCEPTION_V3_SPECS, AUX_TAPS)("imagenet", 299)
    (17, 8)
    """

    def sides(stem: str, n: int) -> tuple[int, int]:
        for layer in stem_layers[stem]:
            n = output_side(n, layer.kernel, layer.strides, layer.padding)
        tap = 0
        for key, spec in default_specs.items():
            padding = reduction_padding(spec)
            if padding is not None:
                n = output_side(n, 3, 2, padding)
            if key in aux_taps:
                tap = n
        return tap, n

    return sides
