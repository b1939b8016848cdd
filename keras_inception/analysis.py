"""Parameter and multiply-add counts, per model and per module.

`macs` counts the multiply-adds of convolution and dense layers for one image: the
convention of the papers ("ops" in GoogLeNet's Table 1) and of torchvision's GFLOPS
metadata. Batch norm, activations, pooling and additions are not counted.

`report` prints one row per module in the layout of GoogLeNet's Table 1. Rows come from
layer names: every layer is named `f"{module}_{part}"` with no underscore in `module`.
"""

from __future__ import annotations

import dataclasses
import math

import keras
from keras import layers

from keras_inception.layers import LocalResponseNormalization

# Conv roles (the part of a conv layer's name between module and "_conv") -> Table 1 column.
# Several roles may share a column (the convolutions of one factorized branch); a column
# shows the width of the branch's last convolution. `report` prints only the columns a
# model uses, in this order, so GoogLeNet keeps exactly Table 1's six.
COLUMNS = {
    "1x1": "#1x1",
    "3x3_reduce": "#3x3 reduce",
    "3x3": "#3x3",
    "3x3_1x3": "#3x3",  # InceptionV3 8x8 modules: parallel 1x3 / 3x1
    "3x3_3x1": "#3x3",
    "5x5_reduce": "#5x5 reduce",
    "5x5": "#5x5",
    "3x3dbl_reduce": "#double 3x3 reduce",
    "3x3dbl_1": "#double 3x3",
    "3x3dbl_2": "#double 3x3",
    "3x3dbl_1x3": "#double 3x3",
    "3x3dbl_3x1": "#double 3x3",
    "7x7_reduce": "#7x7 reduce",
    "7x7_2": "#7x7",
    "7x7dbl_reduce": "#double 7x7 reduce",
    "7x7dbl_4": "#double 7x7",
    "7x7x3_reduce": "#7x7x3 reduce",
    "7x7x3_3": "#7x7x3",
    "pool_proj": "pool proj",
}


def _static_output_shape(layer) -> tuple:
    shape = tuple(layer.output.shape[1:])
    if None in shape:
        raise ValueError(
            f"multiply-adds need a static input size; layer {layer.name!r} has output "
            f"shape {shape}. Build the model with a fixed input_shape."
        )
    return shape


def layer_macs(layer) -> int:
    """Multiply-adds of one layer for one example (0 for layers without weights' products)."""
    if isinstance(layer, keras.Model):
        return macs(layer)
    if isinstance(layer, layers.Conv2D):
        out = _static_output_shape(layer)
        kh, kw = layer.kernel_size
        in_channels = layer.kernel.shape[2]  # already divided by groups
        return out[0] * out[1] * kh * kw * in_channels * layer.filters
    if isinstance(layer, layers.DepthwiseConv2D):
        out = _static_output_shape(layer)
        kh, kw = layer.kernel_size
        return out[0] * out[1] * kh * kw * out[2]
    if isinstance(layer, layers.SeparableConv2D):
        out = _static_output_shape(layer)
        kh, kw = layer.kernel_size
        in_channels = layer.depthwise_kernel.shape[2]
        depthwise = out[0] * out[1] * kh * kw * in_channels * layer.depth_multiplier
        pointwise = out[0] * out[1] * in_channels * layer.depth_multiplier * layer.filters
        return depthwise + pointwise
    if isinstance(layer, layers.Dense):
        out = _static_output_shape(layer)
        return math.prod(out[:-1]) * layer.kernel.shape[0] * layer.units
    return 0


def macs(model: keras.Model) -> int:
    """Multiply-adds of conv and dense layers for one image.

    Example:
    >>> macs(build_googlenet(batch_norm=False))
    1582671872
    """
    return sum(layer_macs(layer) for layer in model.layers)


@dataclasses.dataclass
class ModuleRow:
    """One row of `report`: a module (or stem layer, pool, head) of the network."""

    module: str
    type: str
    output_size: str
    widths: dict[str, int]
    params: int
    macs: int


def _module_of(layer) -> str:
    return layer.name.split("_", 1)[0]


def _describe(module: str, members: list) -> str:
    if module.startswith("inception"):
        return f"inception ({module.removeprefix('inception')})"
    if module.startswith("mixed"):
        key = module.removeprefix("mixed")
        kernels = {m.kernel_size for m in members if isinstance(m, layers.Conv2D)}
        if any(m.strides[0] == 2 for m in members if hasattr(m, "strides")):
            return f"grid reduction ({key})"
        if (1, 7) in kernels:
            return f"inception 17x17, fig. 6 ({key})"
        if (1, 3) in kernels:
            return f"inception 8x8, fig. 7 ({key})"
        if (5, 5) in kernels:
            return f"inception 35x35 ({key})"
        return f"inception, fig. 5 ({key})"
    if module.startswith("aux"):
        return f"auxiliary classifier ({module})"
    separable = [m for m in members if isinstance(m, layers.SeparableConv2D)]
    if separable:
        kh, kw = separable[-1].kernel_size
        return (
            f"separable convolution {kh}x{kw}/{separable[-1].strides[0]} "
            f"(depth multiplier {separable[-1].depth_multiplier})"
        )
    convs = [m for m in members if isinstance(m, layers.Conv2D)]
    if convs:
        kh, kw = convs[-1].kernel_size
        return f"convolution {kh}x{kw}/{convs[-1].strides[0]}"
    kinds = {
        layers.MaxPooling2D: "max pool",
        layers.AveragePooling2D: "avg pool",
    }
    for member in members:
        for cls, label in kinds.items():
            if isinstance(member, cls):
                kh, kw = member.pool_size
                return f"{label} {kh}x{kw}/{member.strides[0]}"
        if isinstance(member, layers.GlobalAveragePooling2D):
            return "avg pool (global)"
        if isinstance(member, layers.GlobalMaxPooling2D):
            return "max pool (global)"
        if isinstance(member, LocalResponseNormalization):
            return "local response norm"
        if isinstance(member, layers.Dropout):
            return f"dropout ({member.rate:.0%})"
        if isinstance(member, layers.Dense):
            activation = keras.activations.serialize(member.activation)
            return "linear" if activation == "linear" else f"linear + {activation}"
    return type(members[-1]).__name__


def rows(model: keras.Model) -> list[ModuleRow]:
    """The per-module rows that `report` prints, in network order."""
    groups: dict[str, list] = {}
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        groups.setdefault(_module_of(layer), []).append(layer)
    result = []
    for module, members in groups.items():
        widths = {}
        for member in members:
            if isinstance(member, layers.Conv2D) and member.name.endswith("_conv"):
                role = member.name[len(module) + 1 : -len("_conv")]
                if role in COLUMNS:
                    widths[COLUMNS[role]] = member.filters
        shape = tuple(members[-1].output.shape[1:])
        result.append(
            ModuleRow(
                module=module,
                type=_describe(module, members),
                output_size="x".join("?" if d is None else str(d) for d in shape),
                widths=widths,
                params=sum(member.count_params() for member in members),
                macs=sum(layer_macs(member) for member in members),
            )
        )
    return result


def report(model: keras.Model, print_fn=print) -> str:
    """Prints (and returns) the per-module table of `model`, GoogLeNet Table 1 layout.

    Columns: type, output size, the width columns of `COLUMNS` that the model uses (for
    GoogLeNet #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), params, ops
    (multiply-adds for one image).
    """
    table = rows(model)
    used = {col for row in table for col in row.widths}
    columns = [col for col in dict.fromkeys(COLUMNS.values()) if col in used]
    header = ["type", "output size", *columns, "params", "ops"]
    lines = [
        [
            row.type,
            row.output_size,
            *(str(row.widths.get(col, "")) for col in columns),
            f"{row.params:,}",
            f"{row.macs:,}",
        ]
        for row in table
    ]
    lines.append(
        ["total", "", *([""] * len(columns)), f"{model.count_params():,}", f"{macs(model):,}"]
    )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    align = ["<", "<"] + [">"] * (len(header) - 2)

    def fmt(cells):
        return "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(cells, align, widths, strict=True))

    text = "\n".join(
        [f"{model.name}", fmt(header), "  ".join("-" * w for w in widths)]
        + [fmt(line) for line in lines]
    )
    if print_fn is not None:
        print_fn(text)
    return text


def main(argv: list[str] | None = None) -> None:
    """`python -m keras_inception.analysis [model ...]`: the report of each model."""
    import argparse

    from keras_inception.registry import get_model, list_models

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("models", nargs="*", default=list_models(), help=f"any of {list_models()}")
    args = parser.parse_args(argv)
    for name in args.models:
        if name not in list_models():
            parser.error(f"unknown model {name!r}; available: {list_models()}")
        report(get_model(name))
        print()


if __name__ == "__main__":
    main()
