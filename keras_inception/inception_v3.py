"""InceptionV3: Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
CVPR 2016. Reference: https://arxiv.org/abs/1512.00567.

The widths below are those of `keras.applications.InceptionV3` and TF-Slim's
`inception_v3` (the paper's Table 1 gives the module kinds and grid sizes, not every
width). Module names follow TF-Slim (`Mixed_5b` -> layers `mixed5b_*`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import keras

from keras_inception import builder
from keras_inception.blocks import StemLayer, apply_module, apply_stem, reduction_padding
from keras_inception.heads import apply_aux_head_v3, aux_head_v3_widths, check_aux_pool
from keras_inception.layers import ConvStyle, apply_transform_input
from keras_inception.specs import (
    V3ModuleA,
    V3ModuleB,
    V3ModuleC,
    V3ReductionA,
    V3ReductionB,
    V3Stem,
)

# The 35x35, 17x17 and 8x8 modules shared by InceptionV3 and the Inception-v2 of
# "Rethinking" (inception_v2.INCEPTION_V2_SPECS). Keys: TF-Slim's Mixed_<key>; the first
# character is the stage. Sizes in comments are at 299x299 with the ImageNet stem.
V3_MODULE_SPECS: Mapping[str, Any] = MappingProxyType(
    {
        "5b": V3ModuleA(conv1x1=64, reduce5x5=48, conv5x5=64, reduce3x3dbl=64, conv3x3dbl=96, pool_proj=32),  # 35x35x256
        "5c": V3ModuleA(conv1x1=64, reduce5x5=48, conv5x5=64, reduce3x3dbl=64, conv3x3dbl=96, pool_proj=64),  # 35x35x288
        "5d": V3ModuleA(conv1x1=64, reduce5x5=48, conv5x5=64, reduce3x3dbl=64, conv3x3dbl=96, pool_proj=64),  # 35x35x288
        "6a": V3ReductionA(conv3x3=384, reduce3x3dbl=64, conv3x3dbl=96),  # 17x17x768
        "6b": V3ModuleB(conv1x1=192, channels_7x7=128, conv7x7=192, conv7x7dbl=192, pool_proj=192),  # 17x17x768
        "6c": V3ModuleB(conv1x1=192, channels_7x7=160, conv7x7=192, conv7x7dbl=192, pool_proj=192),
        "6d": V3ModuleB(conv1x1=192, channels_7x7=160, conv7x7=192, conv7x7dbl=192, pool_proj=192),
        "6e": V3ModuleB(conv1x1=192, channels_7x7=192, conv7x7=192, conv7x7dbl=192, pool_proj=192),
        "7a": V3ReductionB(reduce3x3=192, conv3x3=320, reduce7x7x3=192, conv7x7x3=192),  # 8x8x1280
        "7b": V3ModuleC(conv1x1=320, reduce3x3=384, conv3x3=384, reduce3x3dbl=448, conv3x3dbl=384, pool_proj=192),  # 8x8x2048
        "7c": V3ModuleC(conv1x1=320, reduce3x3=384, conv3x3=384, reduce3x3dbl=448, conv3x3dbl=384, pool_proj=192),  # 8x8x2048
    }
)  # fmt: skip

INCEPTION_V3_SPECS: Mapping[str, Any] = MappingProxyType(
    {"stem": V3Stem(conv1a=32, conv2a=32, conv2b=64, conv3b=80, conv4a=192), **V3_MODULE_SPECS}
)

# Stems as data. "imagenet" is keras.applications / TF-Slim (valid padding, 299 -> 35).
# "small" is ours, for 32x32 inputs (CIFAR): the same five convolutions at stride 1,
# padded "same", without the two max pools, so the three stages run at 32x32, 15x15 and
# 7x7 (the reductions stay valid 3x3/2) and the auxiliary head reads a 15x15 map.
V3_STEM_LAYERS: Mapping[str, tuple[StemLayer, ...]] = MappingProxyType(
    {
        "imagenet": (
            StemLayer("conv1a", "conv", 3, 2, "valid"),  # 149x149x32
            StemLayer("conv2a", "conv", 3, 1, "valid"),  # 147x147x32
            StemLayer("conv2b", "conv", 3, 1, "same"),  # 147x147x64
            StemLayer("pool3a", "maxpool", 3, 2, "valid"),  # 73x73x64
            StemLayer("conv3b", "conv", 1, 1, "valid"),  # 73x73x80
            StemLayer("conv4a", "conv", 3, 1, "valid"),  # 71x71x192
            StemLayer("pool5a", "maxpool", 3, 2, "valid"),  # 35x35x192
        ),
        "small": (
            StemLayer("conv1a", "conv", 3),
            StemLayer("conv2a", "conv", 3),
            StemLayer("conv2b", "conv", 3),
            StemLayer("conv3b", "conv", 1),
            StemLayer("conv4a", "conv", 3),  # 32x32x192
        ),
    }
)

# The auxiliary classifier reads the last 17x17 module (keras mixed7, TF-Slim Mixed_6e).
AUX_TAPS: Mapping[str, str] = MappingProxyType({"6e": "aux"})
AUX_MAP = 5  # the auxiliary head pools its input to 5x5


def sequential_body(stem_layers: Mapping[str, tuple[StemLayer, ...]], aux_taps: Mapping[str, str]):
    """`Architecture.body` for a stem followed by the table's modules in order.

    The body's options: `count_include_pad` (average-pool branches count the padding,
    as torch) and `transform_input` (torchvision's input rescaling first)."""

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
):
    """`(aux tap side, final side)` for an `n`x`n` input, following the stem's layers and
    each grid reduction of the table (a 3x3/2 window with the module's padding)."""

    def sides(stem: str, n: int) -> tuple[int, int]:
        for layer in stem_layers[stem]:
            n = builder.output_side(n, layer.kernel, layer.strides, layer.padding)
        tap = 0
        for key, spec in default_specs.items():
            padding = reduction_padding(spec)
            if padding is not None:
                n = builder.output_side(n, 3, 2, padding)
            if key in aux_taps:
                tap = n
        return tap, n

    return sides


# --- weights of keras.applications.InceptionV3 --------------------------------------------

_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
_IMAGENET_FILES = {
    True: (
        "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        "9a0d58056eeedaa3f26cb7ebd46da564",
    ),
    False: (
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "bcbd6486424b2319ff4ef7d526e38f63",
    ),
}


def _fetch_imagenet(include_top: bool) -> str:
    filename, file_hash = _IMAGENET_FILES[include_top]
    try:
        return keras.utils.get_file(
            filename, _KERAS_WEIGHTS + filename, cache_subdir="models", file_hash=file_hash
        )
    except Exception as err:  # get_file raises plain Exceptions on network errors
        raise RuntimeError(
            f"could not fetch the ImageNet weights of keras.applications.InceptionV3 "
            f"({_KERAS_WEIGHTS + filename}) into Keras's cache: {err}. When offline, put the "
            "file in ~/.keras/models/ or pass weights=<path to the file>."
        ) from err


def _producer(tensor):
    """The layer that produced `tensor` and that call's input tensors."""
    operation, node_index, _ = tensor._keras_history
    return operation, list(operation._inbound_nodes[node_index].input_tensors)


_PASS_THROUGH = (
    keras.layers.Dropout,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
)


def _features(tensor, *, top: bool):
    """Steps back from a model output to the last feature map (before head or pooling)."""
    layer, inputs = _producer(tensor)
    if top and isinstance(layer, keras.layers.Dense):
        tensor = inputs[0]
        layer, inputs = _producer(tensor)
    while isinstance(layer, _PASS_THROUGH):
        tensor = inputs[0]
        layer, inputs = _producer(tensor)
    return tensor


def _kind(layer) -> type:
    """The layer's class, with FusedBatchNormalization (our builders' batch norm: same
    weights and numbers) counted as Keras's BatchNormalization."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return keras.layers.BatchNormalization
    return type(layer)


def match_layers(reference_output, output) -> list[tuple[Any, Any]]:
    """Pairs the layers of two graphs of the same structure, walking back from the outputs.

    Both graphs are walked in step: each layer's inputs are visited in call order (branch
    order of every concatenation), so the pairing depends on the topology only, never on
    layer names. Dropout is skipped on both sides (it has no weights). Raises ValueError
    at the first layer whose type differs (a FusedBatchNormalization matches a
    BatchNormalization).
    """
    pairs, seen = [], set()
    stack = [(reference_output, output)]
    while stack:
        ref_tensor, tensor = stack.pop()
        ref_layer, ref_inputs = _producer(ref_tensor)
        layer, inputs = _producer(tensor)
        while isinstance(layer, keras.layers.Dropout):
            layer, inputs = _producer(inputs[0])
        while isinstance(ref_layer, keras.layers.Dropout):
            ref_layer, ref_inputs = _producer(ref_inputs[0])
        if (id(ref_layer), id(layer)) in seen:
            continue
        seen.add((id(ref_layer), id(layer)))
        if _kind(ref_layer) is not _kind(layer) or len(ref_inputs) != len(inputs):
            raise ValueError(
                f"the model does not match keras.applications.InceptionV3 at layer "
                f"{layer.name!r} ({type(layer).__name__}, {len(inputs)} inputs); the "
                f"reference has {ref_layer.name!r} ({type(ref_layer).__name__}, "
                f"{len(ref_inputs)} inputs)"
            )
        pairs.append((ref_layer, layer))
        stack.extend(reversed(list(zip(ref_inputs, inputs, strict=True))))
    return pairs


def copy_weights(reference: keras.Model, model: keras.Model, *, top: bool) -> int:
    """Copies the weights of `reference` (a keras.applications.InceptionV3) into `model`
    by structure; the classifier too when `top`. Returns the number of layers copied.

    Every weighted layer of the reference must find its counterpart with the same weight
    shapes; nothing is assigned unless all of them do.
    """
    outputs = model.output
    main = outputs["main"] if isinstance(outputs, dict) else outputs
    ref_out = reference.output
    if not top:
        ref_out = _features(ref_out, top=True)
        main = _features(main, top=True)
    pairs = match_layers(ref_out, main)
    assignments = []
    for ref_layer, layer in pairs:
        ref_weights = ref_layer.get_weights()
        shapes = [w.shape for w in ref_weights]
        own = [tuple(w.shape) for w in layer.weights]
        if shapes != own:
            raise ValueError(
                f"weight shapes of layer {layer.name!r} {own} do not match "
                f"keras.applications.InceptionV3 layer {ref_layer.name!r} {shapes}"
            )
        if ref_weights:
            assignments.append((layer, ref_weights))
    expected = sum(
        1
        for layer in reference.layers
        if layer.weights and (top or not isinstance(layer, keras.layers.Dense))
    )
    if len(assignments) != expected:
        raise ValueError(
            f"matched {len(assignments)} weighted layers of keras.applications.InceptionV3; "
            f"it has {expected}"
        )
    for layer, weights in assignments:
        layer.set_weights(weights)
    return len(assignments)


def _reference(include_top: bool, channels: int, classes: int) -> keras.Model:
    return keras.applications.InceptionV3(
        include_top=include_top,
        weights=None,
        input_shape=(75, 75, channels),
        classes=classes,
        classifier_activation=None,
    )


def load_keras_applications_weights(model: keras.Model, weights: str, include_top: bool) -> None:
    """`Architecture.load_weights` for InceptionV3.

    Accepts `"imagenet"` (Keras's own file, through Keras's cache), a weights file of
    `keras.applications.InceptionV3` (legacy `.h5` or `.weights.h5`, with or without the
    top), or a file written by this model's own `save_weights`. A keras.applications file
    is loaded into a freshly built `keras.applications.InceptionV3` and copied layer by
    layer (see `copy_weights`); layers it lacks (auxiliary head; the classifier, from a
    file without the top) keep their initialization.
    """
    outputs = model.output
    main = outputs["main"] if isinstance(outputs, dict) else outputs
    classes = main.shape[-1] if include_top else None
    channels = model.input.shape[-1]
    if weights == "imagenet":
        if include_top and classes != 1000:
            raise ValueError(
                f"weights='imagenet' with include_top=True needs classes=1000; received {classes}"
            )
        if channels != 3:
            raise ValueError(
                f"weights='imagenet' needs 3 input channels; received input shape "
                f"{tuple(model.input.shape[1:])}"
            )
        path = _fetch_imagenet(include_top)
        candidates = [(include_top, classes or 1000)]
    else:
        path = str(weights)
        candidates = [(True, classes), (False, None)] if include_top else [(False, None)]
        candidates.append((True, _legacy_file_classes(path) or 1000))
        candidates = list(dict.fromkeys(candidates))
    errors = []
    for file_top, file_classes in candidates:
        reference = _reference(file_top, channels, file_classes or 1000)
        try:
            _load_strict(reference, path)
        except Exception as err:  # noqa: BLE001 - every failure is reported below
            errors.append(f"as keras.applications.InceptionV3(include_top={file_top}): {err}")
            continue
        copy_weights(reference, model, top=include_top and file_top)
        return
    try:
        _load_strict(model, path)
        return
    except Exception as err:  # noqa: BLE001
        errors.append(f"as this model's own weights: {err}")
    raise ValueError(
        f"could not load weights {path!r} into {model.name}:\n  " + "\n  ".join(errors)
    )


def _legacy_file_classes(path: str) -> int | None:
    """Classes of the last dense layer of a legacy `.h5` weights file, if it has one."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f.get("model_weights", f)
            last = group[group.attrs["layer_names"][-1]]
            names = last.attrs["weight_names"]
            kernel = last[names[0]]
            return int(kernel.shape[-1]) if len(kernel.shape) == 2 else None
    except Exception:  # noqa: BLE001 - not a legacy file: the other candidates apply
        return None


def _load_strict(model: keras.Model, path: str) -> None:
    """`model.load_weights(path)`, but a file that leaves any variable unloaded fails
    (Keras only warns for `.weights.h5` files whose layers do not match)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.load_weights(path)


ARCHITECTURE = builder.Architecture(
    family="inception_v3",
    default_size=299,
    default_specs=INCEPTION_V3_SPECS,
    stems=("imagenet", "small"),
    minimum_size=builder.searched_minimum_size(
        spatial_sides(V3_STEM_LAYERS, INCEPTION_V3_SPECS, AUX_TAPS), AUX_MAP
    ),
    body=sequential_body(V3_STEM_LAYERS, AUX_TAPS),
    aux_head=apply_aux_head_v3,
    load_weights=load_keras_applications_weights,
)


def build_inception_v3(
    *,
    include_top: bool = True,
    weights: str | None = None,
    input_tensor: Any = None,
    input_shape: tuple | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    aux_logits: bool = False,
    sync_batch_norm: bool = False,
    fused_batch_norm: bool = True,
    bn_momentum: float = 0.99,
    bn_scale: bool = False,
    count_include_pad: bool = False,
    aux_pool: str = "uniform",
    transform_input: bool = False,
    dropout: float = 0.2,
    stem: str = "imagenet",
    width_multiplier: float = 1.0,
    min_depth: int = 16,
    bottleneck_ratio: float = 1.0,
    specs: Mapping[str, Any] | None = None,
    name: str = "inception_v3",
) -> keras.Model:
    """InceptionV3, in the conventions of `keras.applications`.

    Reference: Szegedy et al., "Rethinking the Inception Architecture for Computer Vision"
    (CVPR 2016).

    The topology and widths of `keras.applications.InceptionV3`: batch norm without scale
    after every convolution, no conv bias; 23,851,784 parameters (21,802,784 without the
    top) and 5,713,216,096 multiply-adds at 299x299. Known deviations: dropout before the
    classifier (TF-Slim's keep probability 0.8; keras.applications has none; it changes
    no weight and no inference output), and an auxiliary head whose pool adapts to the
    input size (exactly 5x5/3 at 299x299).

    torchvision's `Inception3`, output for output at every input size, is
    `build_inception_v3(bn_scale=True, count_include_pad=True, aux_pool="torch",
    dropout=0.5)` (see `keras_inception.from_torchvision`).

    Args:
        include_top: bool. Include the dropout and classifier on top. Defaults to True.
        weights: str or None. None (random init), `"imagenet"` (keras.applications'
            file, fetched through Keras's cache), or a path to a weights file of
            `keras.applications.InceptionV3` (legacy `.h5` or `.weights.h5`, with or
            without the top) or of this model (`model.save_weights`). A file without the
            top leaves the classifier as initialized; the auxiliary head always is.
            Defaults to None.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: tuple. `(height, width, channels)`. Defaults to `(299, 299, 3)`
            with the top, `(None, None, 3)` without. At least 75x75 with the ImageNet
            stem (107x107 with the auxiliary head).
        pooling: None, "avg" or "max". Global pooling of the features when
            `include_top=False`. Defaults to None (the 4D feature map).
        classes: int. Number of classes. Defaults to 1000.
        classifier_activation: str or None. Activation of every classifier output; None
            returns logits. Defaults to "softmax".
        aux_logits: bool. Add the auxiliary classifier after the 17x17 stage (Mixed_6e):
            5x5/3 average pool, 1x1 conv 128, 5x5 conv 768 (conv + BN, "BN-auxiliary";
            both scaled by `width_multiplier` as in TF-Slim), dense `classes`. The model then returns `{"main", "aux"}`; train with
            `loss_weights=keras_inception.default_loss_weights(model)` (aux 0.4, TF-Slim).
            Defaults to False.
        sync_batch_norm: bool. Synchronized BN across replicas. Defaults to False.
        fused_batch_norm: bool. Batch norm on TensorFlow's fused kernel
            (`FusedBatchNormalization`: same weights and numbers, faster training; Keras's
            own computation on other backends). False: `keras.layers.BatchNormalization`.
            Defaults to True.
        bn_momentum: float. Momentum of the BN moving mean and variance (Keras's:
            `moving = momentum * moving + (1 - momentum) * batch`). Lower it when an
            epoch has few steps. Defaults to 0.99.
        bn_scale: bool. Learn a BN gamma after every convolution, as torchvision's
            `BatchNorm2d`; keras.applications and TF-Slim have none. Defaults to False.
        count_include_pad: bool. The 3x3/1 average pools of the module pool branches
            divide by 9 at the border too, counting the zero padding, as torch's
            `F.avg_pool2d(x, 3, 1, 1)` (torchvision). False divides by the cells inside
            the map (Keras "same", TF-Slim). Defaults to False.
        aux_pool: str. Pooling of the auxiliary head: "uniform" (the pool adapts its
            window so that the map stays 5x5) or "torch" (torchvision's `InceptionAux`:
            fixed 5x5/3 pool, then a global average after the 5x5 conv; needs inputs of
            at least 299x299). The same at 299x299. Defaults to "uniform".
        transform_input: bool. Start with torchvision's `transform_input` (a
            `Rescaling` layer): inputs normalized with ImageNet's mean and std become
            the [-1, 1] inputs of Google's weights. Needs 3 channels. Defaults to False.
        dropout: float. Dropout before the classifier. Defaults to 0.2 (TF-Slim).
        stem: str. "imagenet" (keras.applications) or "small" (stride 1, padded, no max
            pools: stages at 32x32, 15x15 and 7x7 for a 32x32 input). Defaults to
            "imagenet".
        width_multiplier: float. Scales every conv width as TF-Slim's depth_multiplier:
            `max(int(w * width_multiplier), min_depth)`. Defaults to 1.0.
        min_depth: int. Smallest scaled width. Defaults to 16.
        bottleneck_ratio: float. Further scales only the reduce widths (the 1x1 convs in
            front of larger convolutions, and `channels_7x7` inside the factorized 7x7
            branches); module outputs are unchanged. Defaults to 1.0.
        specs: mapping. A full width table of the same types as `INCEPTION_V3_SPECS`.
            Defaults to `INCEPTION_V3_SPECS`.
        name: str. Model name. Defaults to "inception_v3".

    Returns:
        A `keras.Model`.

    Examples:
    >>> model = build_inception_v3(input_shape=(32, 32, 3), stem="small", classes=10,
    ...                            width_multiplier=0.25, aux_logits=True)
    >>> sorted(model.output)
    ['aux', 'main']
    """
    check_aux_pool(aux_pool)
    return builder.build(
        ARCHITECTURE,
        include_top=include_top,
        weights=weights,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        aux_logits=aux_logits,
        stem=stem,
        width_multiplier=width_multiplier,
        min_depth=min_depth,
        bottleneck_ratio=bottleneck_ratio,
        specs=specs,
        dropout=dropout,
        name=name,
        style=ConvStyle(
            batch_norm=True,
            bn_scale=bool(bn_scale),
            sync_batch_norm=sync_batch_norm,
            fused_batch_norm=fused_batch_norm,
            bn_momentum=bn_momentum,
        ),
        body_options={
            "count_include_pad": bool(count_include_pad),
            "transform_input": bool(transform_input),
        },
        aux_options={**aux_head_v3_widths(width_multiplier, min_depth), "pool": aux_pool},
    )
